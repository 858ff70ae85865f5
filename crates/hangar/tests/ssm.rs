//! Credentials from AWS SSM Parameter Store, against a moto server: the seed's layout, SecureString
//! decryption, precedence of the environment, missing parameters named in full, and the binary
//! honouring AWS_ENDPOINT_URL end to end.

mod support;

use hangar::credentials::{AuthMode, Credentials, Origin, SsmParameterStore};
use hangar_emulator::{SEED_CLIENT_ID, SEED_INSTALLATION_ID, SEED_PAT, keys};
use secrecy::ExposeSecret;
use support::moto::Moto;
use support::*;

const PREFIX: &str = "/your-app-name/github-integration";

#[tokio::test]
async fn reads_the_seed_layout_and_decrypts_secure_strings() {
    within(60, async {
        let moto = Moto::start();
        moto.put_seed_credentials(PREFIX).await;
        let store = SsmParameterStore::from_config(&moto.sdk_config());
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
        let store = SsmParameterStore::from_config(&moto.sdk_config());

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
        let emu = emulator().await;
        let api = emu.api_url();
        let mut env: Vec<(&str, String)> = moto.env();
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
    })
    .await
}

#[tokio::test]
async fn missing_parameters_and_unreachable_ssm_are_clear_errors() {
    within(90, async {
        let moto = Moto::start();
        let emu = emulator().await;
        let mut env: Vec<(&str, String)> = moto.env();
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
