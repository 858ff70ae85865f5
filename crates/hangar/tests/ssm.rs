//! Credentials from AWS SSM Parameter Store, against a moto server behind the AWS realism layer
//! (`support::realism`, AWS's rates on; set-up talks to moto directly): the seed's layout,
//! SecureString decryption, precedence of the environment, missing parameters named in full, the
//! binary honouring AWS_ENDPOINT_URL end to end, and the agent's one-shot parameter taken while
//! SSM throttles its read and its delete.

mod support;

use std::time::{Duration, Instant};

use hangar::credentials::ssm::Patience;
use hangar::credentials::{AuthMode, Credentials, Origin, SsmError, SsmParameterStore};
use hangar_emulator::{SEED_CLIENT_ID, SEED_INSTALLATION_ID, SEED_PAT, keys};
use secrecy::ExposeSecret;
use support::moto::Moto;
use support::realism::{Limit, Realism, THROTTLING};
use support::*;

const PREFIX: &str = "/your-app-name/github-integration";

#[tokio::test]
async fn reads_the_seed_layout_and_decrypts_secure_strings() {
    within(60, async {
        let moto = Moto::start();
        moto.put_seed_credentials(PREFIX).await;
        let aws = Realism::aws(&moto.url);
        let store = SsmParameterStore::from_config(&aws.sdk_config());
        let mut creds = Credentials::from_env(&|_| None).unwrap();
        creds
            .fill_from_ssm(&store, "your-app-name/github-integration/")
            .await
            .unwrap();

        let pat = creds.pat.as_ref().unwrap();
        assert_eq!(pat.value.expose_secret(), SEED_PAT);
        assert_eq!(pat.origin, Origin::Ssm(format!("{PREFIX}/pat")));
        assert_eq!(
            creds.installation_id.as_ref().unwrap().value,
            SEED_INSTALLATION_ID
        );
        assert_eq!(
            creds
                .private_key
                .as_ref()
                .unwrap()
                .value
                .expose_secret()
                .trim(),
            keys::APP_PRIVATE_KEY_PKCS1.trim()
        );
        let resolved = creds.resolve(&org(), None).unwrap();
        assert_eq!(resolved.mode, AuthMode::App);
        assert_eq!(aws.calls("GetParameters"), 1, "one call for the four names");
    })
    .await
}

#[tokio::test]
async fn environment_wins_over_ssm_and_missing_parameters_are_named() {
    within(60, async {
        let moto = Moto::start();
        moto.put(&format!("{PREFIX}/client-id"), SEED_CLIENT_ID, false)
            .await;
        moto.put(&format!("{PREFIX}/pat"), "ghp_from_ssm", true)
            .await;
        let aws = Realism::aws(&moto.url);
        let store = SsmParameterStore::from_config(&aws.sdk_config());

        let env = |k: &str| (k == "GITHUB_PAT").then(|| "ghp_from_env".to_string());
        let mut creds = Credentials::from_env(&env).unwrap();
        creds.fill_from_ssm(&store, PREFIX).await.unwrap();
        assert_eq!(
            creds.pat.as_ref().unwrap().value.expose_secret(),
            "ghp_from_env"
        );

        // The App is half there: the error names the full parameter path that is missing.
        let err = creds
            .resolve(&org(), Some(AuthMode::App))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{PREFIX}/private-key")), "{err}");
        assert!(
            err.contains(&format!("SSM parameter {PREFIX}/client-id")),
            "{err}"
        );
    })
    .await
}

#[tokio::test]
async fn binary_reads_ssm_through_aws_endpoint_url_in_both_modes() {
    within(90, async {
        let moto = Moto::start();
        moto.put_seed_credentials(PREFIX).await;
        let aws = Realism::aws(&moto.url);
        let emu = emulator().await;
        let api = emu.api_url();
        let mut env: Vec<(&str, String)> = aws.env();
        env.push(("GITHUB_API_URL", api.clone()));
        env.push(("HANGAR_SSM_PREFIX", PREFIX.into()));

        for scope in [["--org", ORG], ["--repo", REPO]] {
            let out = hangar(&["token", "registration", scope[0], scope[1]], &env).await;
            assert!(out.status.success(), "{}", text(&out.stderr));
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(json["token"].as_str().unwrap().len() >= 20);
            assert!(json["expires_at"].is_string());
        }
        assert_eq!(emu.registration_tokens_issued(), 2);
        assert!(aws.calls("GetParameters") >= 2, "read through the layer");
    })
    .await
}

#[tokio::test]
async fn missing_parameters_and_unreachable_ssm_are_clear_errors() {
    within(90, async {
        let moto = Moto::start();
        let aws = Realism::aws(&moto.url);
        let emu = emulator().await;
        let mut env: Vec<(&str, String)> = aws.env();
        env.push(("GITHUB_API_URL", emu.api_url()));

        let token_with_prefix = |prefix: &'static str| {
            let args = [
                "--ssm-prefix",
                prefix,
                "token",
                "registration",
                "--org",
                ORG,
            ];
            let env = env.clone();
            async move { hangar(&args, &env).await }
        };

        // Nothing stored under the prefix: configuration error, exit 2, paths named.
        let out = token_with_prefix("/nothing/here").await;
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(err.contains("/nothing/here/client-id"), "{err}");
        assert!(err.contains("/nothing/here/pat"), "{err}");

        // An endpoint where nothing listens: AWS failure, exit 1, the cause and the fix.
        drop(aws);
        drop(moto);
        let out = token_with_prefix(PREFIX).await;
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("could not read SSM Parameter Store"), "{err}");
        assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");
        assert_eq!(emu.registration_tokens_issued(), 0);
    })
    .await
}

/// Empties `operation`'s bucket again and again until the layer has throttled it `times` times
/// (other callers of the account taking every token), then lets it refill at its rate. Gives up
/// after ten seconds (the caller's assertions then say what did not happen).
async fn hold_empty(aws: &Realism, operation: &str, times: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while aws.throttled(operation) < times && Instant::now() < deadline {
        aws.drain(operation);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The agent's one-shot JIT parameter while SSM throttles: its read (GetParameter, 40 a second)
/// and its delete (DeleteParameter; 3 a second here, the lower of the reported rates) find empty
/// buckets, and `take_parameter` waits them out within its minute of patience. The store's SDK
/// retries are off, so the waiting is Hangar's own.
#[tokio::test]
async fn take_parameter_waits_out_a_throttled_read_and_delete() {
    within(90, async {
        let moto = Moto::start();
        let name = "/hangar/jit/pool/runner-1";
        moto.put(name, "jit-value", true).await;
        let aws = Realism::aws(&moto.url);
        aws.throttle("DeleteParameter", Limit::new(3.0, 3.0), THROTTLING);
        let store = SsmParameterStore::from_config(&aws.sdk_config());

        let started = Instant::now();
        let (taken, (), ()) = tokio::join!(
            store.take_parameter(name),
            hold_empty(&aws, "GetParameter", 2),
            hold_empty(&aws, "DeleteParameter", 2),
        );
        let took = started.elapsed();
        assert_eq!(taken.unwrap().expose_secret(), "jit-value");
        assert!(took < Duration::from_secs(60), "took {took:?}");
        assert!(aws.throttled("GetParameter") >= 2);
        assert!(aws.throttled("DeleteParameter") >= 2);
        assert_eq!(
            aws.calls("GetParameter") - aws.throttled("GetParameter"),
            1,
            "read once"
        );
        let truth = aws_sdk_ssm::Client::new(&moto.sdk_config());
        assert!(
            truth.get_parameter().name(name).send().await.is_err(),
            "deleted"
        );
    })
    .await
}

/// A delete that never gets through: once patience runs out, the value is not handed out (it
/// could still be read by others) and the error names the parameter and the fix.
#[tokio::test]
async fn take_parameter_hands_out_nothing_it_could_not_delete() {
    within(60, async {
        let moto = Moto::start();
        let name = "/hangar/jit/pool/runner-2";
        moto.put(name, "jit-value", true).await;
        let aws = Realism::aws(&moto.url);
        aws.starve("DeleteParameter");
        let store = SsmParameterStore::from_config(&aws.sdk_config());
        let patience = Patience {
            first_wait: Duration::from_millis(50),
            max_wait: Duration::from_millis(200),
            total: Duration::from_secs(1),
        };
        let err = store.take_parameter_with(name, patience).await.unwrap_err();
        let SsmError::NotDeleted {
            name: refused,
            cause,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(refused, name);
        assert!(cause.contains("ThrottlingException"), "{cause}");
        assert!(err.to_string().contains("ssm:DeleteParameter"), "{err}");
        assert!(!format!("{err:?}").contains("jit-value"));
        assert!(aws.throttled("DeleteParameter") >= 3, "retried meanwhile");
        let truth = aws_sdk_ssm::Client::new(&moto.sdk_config());
        assert!(truth.get_parameter().name(name).send().await.is_ok());
    })
    .await
}
