//! The checks of the whole file, once per account and region: SSM's write throughput against
//! `controller.ssm_writes_per_second`, and the Fargate vCPU quotas against every pool's `max`
//! times its task's vCPUs.

use super::AwsInspect;
use super::checks::{PoolFacts, QUOTA_ON_DEMAND, QUOTA_SPOT, SSM_THROUGHPUT, not_checked};
use super::names::{FARGATE_SERVICE_CODE, FargateClass, vcpus};
use crate::controller::config::ControllerSettings;
use crate::report::{Check, Checks, Status};

/// `PutParameter` a second: about 3 with standard throughput and at most 10 with higher
/// throughput. AWS publishes no figure; this is AWS Support's answer as reported in
/// https://github.com/github-aws-runners/terraform-aws-github-runner/issues/2944 (the same
/// source as `controller.ssm_writes_per_second`'s default).
const STANDARD_WRITES_PER_SECOND: f64 = crate::controller::config::defaults::SSM_WRITES_PER_SECOND;
const HIGH_THROUGHPUT_WRITES_PER_SECOND: f64 = 10.0;

fn quota_check(class: FargateClass) -> &'static str {
    match class {
        FargateClass::OnDemand => QUOTA_ON_DEMAND,
        FargateClass::Spot => QUOTA_SPOT,
    }
}

/// The file-wide checks: SSM write throughput and the Fargate vCPU quotas.
pub(super) async fn check_account<A: AwsInspect + Sync>(
    aws: &A,
    settings: &ControllerSettings,
    pools: &[PoolFacts],
    region: &str,
) -> Vec<Check> {
    let mut checks = Checks::default();
    match pools.iter().find_map(|p| p.scope.clone()) {
        Some(scope) => {
            let setting = scope.high_throughput_setting();
            match aws.ssm_service_setting(&setting).await {
                Ok(answer) => {
                    let on = answer.value.trim().eq_ignore_ascii_case("true");
                    let (status, detail, fix) =
                        throughput_verdict(on, settings.ssm_writes_per_second, &setting);
                    checks.push(SSM_THROUGHPUT, status, detail, fix);
                }
                Err(err) => not_checked(&mut checks, SSM_THROUGHPUT, &err),
            }
        }
        None => checks.skip(
            &[SSM_THROUGHPUT],
            "needs the account id, read from a task definition's ARN; none could be read",
        ),
    }
    for class in [FargateClass::OnDemand, FargateClass::Spot] {
        let members: Vec<&PoolFacts> = pools.iter().filter(|p| p.fargate == Some(class)).collect();
        if members.is_empty() {
            continue;
        }
        match aws
            .service_quota(FARGATE_SERVICE_CODE, class.quota_code())
            .await
        {
            Ok(quota) => {
                let (status, detail, fix) = quota_verdict(class, quota.value, &members, region);
                checks.push(quota_check(class), status, detail, fix);
            }
            Err(err) => not_checked(&mut checks, quota_check(class), &err),
        }
    }
    checks.into_vec()
}

/// `controller.ssm_writes_per_second` against what SSM takes with (`high_throughput`) or
/// without higher throughput.
pub(super) fn throughput_verdict(
    high_throughput: bool,
    writes_per_second: f64,
    setting_id: &str,
) -> (Status, String, Option<String>) {
    let writes = vcpus(writes_per_second);
    if high_throughput {
        if writes_per_second > HIGH_THROUGHPUT_WRITES_PER_SECOND {
            (
                Status::Warn,
                format!(
                    "higher throughput is on, which takes up to {} PutParameter a second, but \
                     controller.ssm_writes_per_second is {writes}: launches will be throttled",
                    vcpus(HIGH_THROUGHPUT_WRITES_PER_SECOND)
                ),
                Some(format!(
                    "lower controller.ssm_writes_per_second to {} or less",
                    vcpus(HIGH_THROUGHPUT_WRITES_PER_SECOND)
                )),
            )
        } else {
            (
                Status::Pass,
                format!(
                    "higher throughput is on: up to {} writes a second is fine; the controller \
                     paces them at {writes}",
                    vcpus(HIGH_THROUGHPUT_WRITES_PER_SECOND)
                ),
                None,
            )
        }
    } else if writes_per_second > STANDARD_WRITES_PER_SECOND {
        (
            Status::Warn,
            format!(
                "higher throughput is off, so SSM takes about {} PutParameter a second, but \
                 controller.ssm_writes_per_second is {writes}: launches will be throttled",
                vcpus(STANDARD_WRITES_PER_SECOND)
            ),
            Some(format!(
                "lower controller.ssm_writes_per_second to {}, or turn on higher throughput \
                 (charged per call): aws ssm update-service-setting --setting-id {setting_id} \
                 --setting-value true",
                vcpus(STANDARD_WRITES_PER_SECOND)
            )),
        )
    } else {
        (
            Status::Pass,
            format!(
                "standard throughput (about {} PutParameter a second); the controller paces \
                 writes at {writes}",
                vcpus(STANDARD_WRITES_PER_SECOND)
            ),
            None,
        )
    }
}

/// The pools' most vCPUs on Fargate (`max` × task vCPU) against the account's quota.
pub(super) fn quota_verdict(
    class: FargateClass,
    quota: f64,
    pools: &[&PoolFacts],
    region: &str,
) -> (Status, String, Option<String>) {
    let mut total = 0.0;
    let mut terms = Vec::new();
    let mut uncounted = Vec::new();
    for pool in pools {
        match pool.task_vcpus {
            Some(each) => {
                total += f64::from(pool.max) * each;
                terms.push(format!("{}: max {} x {}", pool.pool, pool.max, vcpus(each)));
            }
            None => uncounted.push(pool.pool.as_str()),
        }
    }
    let not_counted = if uncounted.is_empty() {
        String::new()
    } else {
        format!(
            "; not counted: {} (no task definition to read its cpu)",
            uncounted.join(", ")
        )
    };
    let sum = format!(
        "up to {} vCPU ({}){not_counted}",
        vcpus(total),
        terms.join(" + ")
    );
    if total > quota {
        (
            Status::Fail,
            format!(
                "the pools may run {sum}, but the account's {} ({}) is {} in {region}",
                class.quota_name(),
                class.quota_code(),
                vcpus(quota)
            ),
            Some(format!(
                "request an increase of {} ({}) to at least {} in Service Quotas (aws \
                 service-quotas request-service-quota-increase --service-code {FARGATE_SERVICE_CODE} \
                 --quota-code {} --desired-value {}), or lower the pools' `max`",
                class.quota_name(),
                class.quota_code(),
                vcpus(total.ceil()),
                class.quota_code(),
                vcpus(total.ceil())
            )),
        )
    } else {
        (
            Status::Pass,
            format!(
                "{sum} of {} {} in {region} (every Fargate task of the account counts too)",
                vcpus(quota),
                class.quota_name()
            ),
            None,
        )
    }
}
