//! The ECS backend: one runner is one `RunTask` task. Its JIT configuration is handed over as a
//! one-shot SSM SecureString `{parameter_prefix}/{pool}/{runner name}` that `hangar agent` reads
//! and deletes (`RUNNER_JIT_CONFIG_PARAMETER`); tasks are found again by their Hangar tags,
//! narrowed by a `startedBy` value derived from the pool. Every AWS refusal is sorted into a
//! [`BackendError`] whose message says what AWS said and, for configuration problems, which
//! launch setting to fix.
//!
//! Invariants:
//! - The JIT value goes to exactly one place, `ssm:PutParameter`'s value; RunTask overrides carry
//!   only the parameter's name, the runner's name and the pool's scope (`RUNNER_SCOPE`,
//!   `GITHUB_REPOSITORY` or `GITHUB_ORG`), and no error or log line holds the value.
//! - A parameter is never overwritten: an existing one is somebody's handoff (a name clash is an
//!   error, and that parameter is left alone), unless its description carries this write's own
//!   random mark (the SDK sent the write again after its first answer was lost): then it is the
//!   handoff, and the launch goes on.
//! - When RunTask fails after the parameter was written, the parameter is deleted before the
//!   error is returned (if even that delete fails, the error says so and the reaper's
//!   [`Backend::list_handoffs`] finds it).
//! - A launch costs one SSM write (plus one delete when it fails). SSM's write quotas are small
//!   (about 3 `PutParameter` a second per account and region by default, as reported), so every
//!   write waits for the process-wide pacer (`controller::pace`, `ssm_writes_per_second`). A
//!   launch first takes a place in the pacer's queue ([`Backend::ready_to_launch`]), before its
//!   JIT configuration is minted, so none is minted faster than it can be written.
//! - Tasks without all three Hangar tags, or tagged for another pool, are never reported.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    KeyValuePair, LaunchType, NetworkConfiguration, PlacementConstraint, PlacementConstraintType,
    Tag, TaskField, TaskOverride,
};
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::aws::ecs::{DESCRIBE_TASKS_BATCH, to_chrono};
use crate::controller::pace::Pacer;
use crate::github::Scope;

use super::{
    Backend, BackendError, Handoff, LaunchRequest, LaunchSlot, LogLocation, StopDetails, TAG_POOL,
    TAG_RUNNER_ID, TAG_RUNNER_NAME, Task, TaskState, TaskTags, TaskTimes,
};
use crate::controller::config::EcsLaunch;

/// The variable that gives the task its one-shot parameter's name (read by `hangar agent`).
pub const ENV_JIT_CONFIG_PARAMETER: &str = "RUNNER_JIT_CONFIG_PARAMETER";
/// The variable that tells the agent whether to ask for ECS task scale-in protection.
pub const ENV_TASK_PROTECTION: &str = "HANGAR_TASK_PROTECTION";
/// The variable that gives the task its runner's name.
pub const ENV_RUNNER_NAME: &str = "RUNNER_NAME";

/// ECS limits: StopTask's `reason`, RunTask's `startedBy` (DescribeTasks' batch: aws::ecs).
const STOP_REASON_MAX_CHARS: usize = 255;
const STARTED_BY_MAX_CHARS: usize = 36;
/// SSM limits: value size per tier, name length (with the ARN), hierarchy depth, page size.
const STANDARD_TIER_MAX_BYTES: usize = 4096;
const ADVANCED_TIER_MAX_BYTES: usize = 8192;
/// SSM's limit on a parameter's name counts its whole ARN
/// (`arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME`), not the name alone (PutParameter's API
/// reference: "the length of the following parameter name is 65 characters, not 20").
const PARAMETER_ARN_MAX: usize = 1011;
/// `arn:` + the longest partition (`aws-us-gov`) + `:ssm:` + `:` + a 12-digit account +
/// `:parameter`, around the region: the safe count where the partition is not known.
const PARAMETER_ARN_OVERHEAD: usize = 4 + 10 + 5 + 1 + 12 + 10;
/// The longest runner name (GitHub's limit), for checks made before any name exists.
const RUNNER_NAME_MAX: usize = 64;
const PARAMETER_DEPTH_MAX: usize = 15;
const DESCRIBE_PARAMETERS_PAGE: i32 = 50;

/// Launches, lists and stops one pool's runner tasks on ECS.
#[derive(Clone, Debug)]
pub struct EcsBackend {
    ecs: aws_sdk_ecs::Client,
    ssm: aws_sdk_ssm::Client,
    launch: EcsLaunch,
    region: String,
    /// Passed to the agent (`RUNNER_SCOPE`, `GITHUB_REPOSITORY` / `GITHUB_ORG`), so one task
    /// definition serves repository and organization pools alike.
    scope: Option<Scope>,
    /// The pool's own variables for the agent (`HANGAR_POOL`, `HANGAR_DOCKER`, ...; see
    /// `PoolConfig::runner_environment`), never a credential.
    pool_environment: Vec<(&'static str, String)>,
    /// One task per container instance (`distinctInstance`): Docker pools, whose privileged
    /// daemon can reach its host.
    distinct_instance: bool,
    /// Capacity providers resting after a capacity refusal, until when (see
    /// [`placements_to_try`]).
    resting: Arc<Mutex<HashMap<String, Instant>>>,
    /// Paces `PutParameter` and `DeleteParameter`, shared by every pool of the process.
    ssm_writes: Option<Arc<Pacer>>,
    /// Paces `DescribeParameters` pages (a few a second per account; the leftover listing of a
    /// pool with many parameters takes several), shared likewise.
    ssm_describes: Option<Arc<Pacer>>,
    /// The runner container's awslogs options, as [`EcsBackend::check`] read them from the
    /// task definition (`None`: not checked yet, or it does not log with awslogs).
    awslogs: Arc<Mutex<Option<HashMap<String, String>>>>,
}

impl EcsBackend {
    pub fn new(sdk: &aws_config::SdkConfig, launch: EcsLaunch) -> EcsBackend {
        EcsBackend::with_clients(
            aws_sdk_ecs::Client::new(sdk),
            aws_sdk_ssm::Client::new(sdk),
            launch,
        )
    }

    /// With clients built elsewhere (e.g. with interceptors, or another SSM region).
    pub fn with_clients(
        ecs: aws_sdk_ecs::Client,
        ssm: aws_sdk_ssm::Client,
        launch: EcsLaunch,
    ) -> EcsBackend {
        let region = ecs
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| crate::credentials::ssm::DEFAULT_REGION.to_string());
        EcsBackend {
            ecs,
            ssm,
            launch,
            region,
            scope: None,
            pool_environment: Vec::new(),
            distinct_instance: false,
            resting: Arc::default(),
            ssm_writes: None,
            ssm_describes: None,
            awslogs: Arc::default(),
        }
    }

    /// Where the awslogs driver writes a task's runner container: `<prefix>/<container>/<task
    /// id>` in the group, when the task definition (as checked) says both.
    fn log_location(&self, task_arn: &str) -> Option<LogLocation> {
        let awslogs = self.awslogs.lock().expect("awslogs poisoned");
        crate::aws::task_logs::log_location(
            &self.launch.container_name,
            awslogs.as_ref()?,
            task_arn,
        )
    }

    /// Tells every task the pool's scope (not secret; the agent needs it to run).
    pub fn with_scope(mut self, scope: Scope) -> EcsBackend {
        self.scope = Some(scope);
        self
    }

    /// Gives every task the pool's variables (see `PoolConfig::runner_environment`), and for
    /// a Docker pool places each task on an instance of its own.
    pub fn with_pool_environment(
        mut self,
        environment: Vec<(&'static str, String)>,
        docker: bool,
    ) -> EcsBackend {
        self.pool_environment = environment;
        self.distinct_instance = docker;
        self
    }

    /// Every SSM write (one-shot parameters put and deleted) waits for `pacer` first.
    pub fn with_ssm_pacer(mut self, pacer: Arc<Pacer>) -> EcsBackend {
        self.ssm_writes = Some(pacer);
        self
    }

    /// Every `DescribeParameters` call (each page) waits for `pacer` first.
    pub fn with_ssm_describe_pacer(mut self, pacer: Arc<Pacer>) -> EcsBackend {
        self.ssm_describes = Some(pacer);
        self
    }

    async fn pace_ssm_describe(&self) {
        if let Some(pacer) = &self.ssm_describes {
            pacer.acquire().await;
        }
    }

    async fn pace_ssm_write(&self) {
        if let Some(pacer) = &self.ssm_writes {
            pacer.acquire().await;
        }
    }

    /// Checks the launch settings against ECS before any launch: the cluster exists and is
    /// active, the task definition exists, is active, has the container, fits the launch type
    /// and the network settings. Two ECS calls; changes nothing.
    pub async fn check(&self) -> Result<(), BackendError> {
        let placements = placements(&self.launch)?;
        handoff_name(
            &self.launch.parameter_prefix,
            "pool",
            &"r".repeat(RUNNER_NAME_MAX),
            &self.region,
        )?;
        let launch = &self.launch;

        let clusters = self
            .ecs
            .describe_clusters()
            .clusters(&launch.cluster)
            .send()
            .await
            .map_err(|e| ecs_error("ecs:DescribeClusters", refusal(&e), launch, &self.region))?;
        match clusters.clusters().first() {
            Some(c) if c.status() == Some("ACTIVE") => {}
            Some(c) => {
                return Err(BackendError::Config(format!(
                    "ECS cluster {:?} is {} in region {}. Fix: set `cluster` to an ACTIVE cluster",
                    launch.cluster,
                    c.status().unwrap_or("not active"),
                    self.region
                )));
            }
            None => return Err(cluster_missing(launch, &self.region)),
        }

        let described = self
            .ecs
            .describe_task_definition()
            .task_definition(&launch.task_definition)
            .send()
            .await
            .map_err(|e| {
                ecs_error(
                    "ecs:DescribeTaskDefinition",
                    refusal(&e),
                    launch,
                    &self.region,
                )
            })?;
        let Some(definition) = described.task_definition() else {
            return Err(task_definition_error(
                launch,
                &self.region,
                "ECS described no task definition",
            ));
        };
        if let Some(status) = definition.status().map(|s| s.as_str())
            && status != "ACTIVE"
        {
            return Err(task_definition_error(
                launch,
                &self.region,
                &format!("the task definition is {status}"),
            ));
        }
        let containers: Vec<&str> = definition
            .container_definitions()
            .iter()
            .filter_map(|c| c.name())
            .collect();
        let runner_logs = definition
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some(launch.container_name.as_str()))
            .and_then(|c| c.log_configuration())
            .filter(|l| l.log_driver().as_str() == "awslogs")
            .and_then(|l| l.options().cloned());
        *self.awslogs.lock().expect("awslogs poisoned") = runner_logs;
        if !containers.contains(&launch.container_name.as_str()) {
            return Err(BackendError::Config(format!(
                "task definition {:?} has no container named {:?} (it has {}). Fix: set `container_name` \
                 to the container that runs `hangar agent`",
                launch.task_definition,
                launch.container_name,
                containers.join(", ")
            )));
        }
        let awsvpc = definition.network_mode().map(|m| m.as_str()) == Some("awsvpc");
        if awsvpc && launch.subnets.is_empty() {
            return Err(BackendError::Config(format!(
                "task definition {:?} uses awsvpc networking but the pool names no subnets. Fix: set \
                 `subnets` (and `security_groups`)",
                launch.task_definition
            )));
        }
        if !awsvpc && !launch.subnets.is_empty() {
            return Err(BackendError::Config(format!(
                "task definition {:?} does not use awsvpc networking, so ECS refuses subnets. Fix: \
                 remove `subnets` and `security_groups`, or register the task definition with \
                 networkMode awsvpc",
                launch.task_definition
            )));
        }
        let offers: Vec<&str> = definition
            .compatibilities()
            .iter()
            .map(|c| c.as_str())
            .collect();
        for needs in placements.iter().filter_map(Placement::compatibility) {
            if !offers.is_empty() && !offers.contains(&needs) {
                return Err(BackendError::Config(format!(
                    "task definition {:?} is compatible with {} but the pool launches on {needs}. Fix: set \
                     `launch_type`/`capacity_providers` to match, or add {needs} to the task definition's \
                     requiresCompatibilities",
                    launch.task_definition,
                    offers.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Writes the one-shot parameter; never overwrites. Each write carries a random mark in
    /// its description, so when SSM answers `ParameterAlreadyExists` the backend can tell its
    /// own first attempt (whose answer was lost, and which the SDK sent again) from somebody
    /// else's parameter: its own is the handoff, and the launch goes on; anybody else's is left
    /// alone and the launch fails as a name clash.
    async fn put_handoff(
        &self,
        name: &str,
        jit_config: &SecretString,
        tier: ParameterTier,
        tags: &TaskTags,
    ) -> Result<(), BackendError> {
        let mark = format!("write {:016x}", rand::random::<u64>());
        self.pace_ssm_write().await;
        let answer = self
            .ssm
            .put_parameter()
            .name(name)
            .value(jit_config.expose_secret())
            .r#type(ParameterType::SecureString)
            .set_key_id(self.launch.kms_key_id.clone())
            .tier(tier)
            .overwrite(false)
            .description(format!(
                "hangar: one-shot JIT configuration of runner {} (pool {}), deleted by the task that reads it; {mark}",
                tags.runner_name, tags.pool
            ))
            .send()
            .await;
        let Err(e) = answer else {
            return Ok(());
        };
        let refused = refusal(&e);
        if refused.code() == Some("ParameterAlreadyExists")
            && self
                .description_of(name)
                .await
                .is_some_and(|d| d.ends_with(&mark))
        {
            tracing::debug!(
                parameter = name,
                "the one-shot parameter is this launch's own (a retried write whose first answer was lost)"
            );
            return Ok(());
        }
        let error = ssm_error(
            "ssm:PutParameter",
            refused.clone(),
            name,
            &self.launch,
            &self.region,
        );
        if matches!(refused, Refusal::NoAnswer(_)) {
            // The write may have landed with its answer lost: the parameter (if any) is ours.
            return Err(self.discard_handoff(name, error).await);
        }
        Err(error)
    }

    /// The description of parameter `name` (no value is read), if SSM says.
    async fn description_of(&self, name: &str) -> Option<String> {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(name)
            .build()
            .ok()?;
        self.pace_ssm_describe().await;
        let answer = self
            .ssm
            .describe_parameters()
            .parameter_filters(filter)
            .send()
            .await
            .ok()?;
        answer
            .parameters()
            .iter()
            .find(|p| p.name() == Some(name))
            .and_then(|p| p.description())
            .map(str::to_string)
    }

    /// Deletes the parameter of a failed launch; `error` says so if even that fails.
    async fn discard_handoff(&self, name: &str, error: BackendError) -> BackendError {
        match self.delete_handoff(name).await {
            Ok(()) => error,
            Err(delete) => {
                tracing::warn!(parameter = name, error = %delete, "could not delete the one-shot parameter of a failed launch");
                with_note(
                    error,
                    &format!(
                        " (the one-shot parameter {name} could not be deleted either: {delete}; \
                         the reaper deletes it once SSM lets it)"
                    ),
                )
            }
        }
    }

    async fn run_task(
        &self,
        parameter: &str,
        tags: &TaskTags,
        placement: &Placement,
    ) -> Result<Task, BackendError> {
        let launch = &self.launch;
        let environment = task_environment(parameter, &tags.runner_name, self.scope.as_ref())
            .into_iter()
            .chain(self.pool_environment.iter().cloned())
            .map(|(name, value)| KeyValuePair::builder().name(name).value(value).build())
            .collect();
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&launch.container_name)
                    .set_environment(Some(environment))
                    .build(),
            )
            .build();
        let mut request = self
            .ecs
            .run_task()
            .cluster(&launch.cluster)
            .task_definition(&launch.task_definition)
            .count(1)
            .started_by(started_by(&tags.pool))
            .set_tags(Some(ecs_tags(tags)))
            .enable_ecs_managed_tags(true)
            .overrides(overrides);
        request = match placement {
            Placement::LaunchType(launch_type) => request.launch_type(launch_type.clone()),
            Placement::CapacityProvider(provider) => request.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(provider)
                    .weight(1)
                    .build()
                    .map_err(|e| BackendError::Config(format!("capacity provider: {e}")))?,
            ),
        };
        if self.distinct_instance && placement.compatibility() != Some("FARGATE") {
            request = request.placement_constraints(
                PlacementConstraint::builder()
                    .r#type(PlacementConstraintType::DistinctInstance)
                    .build(),
            );
        }
        if !launch.subnets.is_empty() {
            let vpc = AwsVpcConfiguration::builder()
                .set_subnets(Some(launch.subnets.clone()))
                .set_security_groups(Some(launch.security_groups.clone()))
                .assign_public_ip(if launch.assign_public_ip {
                    AssignPublicIp::Enabled
                } else {
                    AssignPublicIp::Disabled
                })
                .build()
                .map_err(|e| BackendError::Config(format!("awsvpc settings: {e}")))?;
            request = request.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            );
        }
        let output = request
            .send()
            .await
            .map_err(|e| ecs_error("ecs:RunTask", refusal(&e), launch, &self.region))?;
        if let Some(started) = output.tasks().first() {
            let now = Utc::now();
            return Ok(Task {
                id: started.task_arn().unwrap_or_default().to_string(),
                tags: tags.clone(),
                state: state_of(started.last_status(), started.desired_status()),
                created_at: started.created_at().and_then(to_chrono).unwrap_or(now),
                stop_reason: None,
                capacity_provider: started
                    .capacity_provider_name()
                    .map(str::to_string)
                    .or_else(|| placement.provider().map(str::to_string)),
                launch_fallbacks: Vec::new(),
                times: times_of(started),
                log: self.log_location(started.task_arn().unwrap_or_default()),
            });
        }
        if let Some(failure) = output.failures().first() {
            return Err(failure_error(
                failure.reason().unwrap_or("(no reason)"),
                failure.detail(),
                launch,
            ));
        }
        Err(try_again(
            "ecs:RunTask started no task and reported no failure",
        ))
    }

    /// The ARNs of the tasks ECS wants running (pending ones included) that were started with
    /// `started_by`. The API reference: "When you specify startedBy as the filter, it must be
    /// the only filter that you use", and without `desiredStatus` ECS lists RUNNING. Stopping
    /// and stopped tasks are not listed: the controller needs only the live ones, and listing
    /// STOPPED would mean every stopped task of the cluster (an hour of them) each pass.
    async fn task_arns(&self, started_by: &str) -> Result<Vec<String>, BackendError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ecs
                .list_tasks()
                .cluster(&self.launch.cluster)
                .started_by(started_by)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| ecs_error("ecs:ListTasks", refusal(&e), &self.launch, &self.region))?;
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// One task as ECS describes it; `None` when ECS does not know it (a MISSING failure).
    async fn describe_one(
        &self,
        task_id: &str,
    ) -> Result<Option<aws_sdk_ecs::types::Task>, BackendError> {
        let answer = self
            .ecs
            .describe_tasks()
            .cluster(&self.launch.cluster)
            .tasks(task_id)
            .send()
            .await
            .map_err(|e| ecs_error("ecs:DescribeTasks", refusal(&e), &self.launch, &self.region))?;
        Ok(answer.tasks().first().cloned())
    }

    /// One DescribeTasks call (at most [`DESCRIBE_TASKS_BATCH`] tasks), with tags: the tasks
    /// that carry Hangar's, each with its runner's log stream.
    async fn describe_batch(&self, batch: &[String]) -> Result<Vec<Task>, BackendError> {
        let answer = self
            .ecs
            .describe_tasks()
            .cluster(&self.launch.cluster)
            .set_tasks(Some(batch.to_vec()))
            .include(TaskField::Tags)
            .send()
            .await
            .map_err(|e| ecs_error("ecs:DescribeTasks", refusal(&e), &self.launch, &self.region))?;
        let now = Utc::now();
        Ok(answer
            .tasks()
            .iter()
            .filter_map(|t| task_of(t, now))
            .map(|t| Task {
                log: self.log_location(&t.id),
                ..t
            })
            .collect())
    }

    /// Whether ECS no longer has the task running: unknown, stopped, or being stopped.
    async fn stopped_or_unknown(&self, task_id: &str) -> Result<bool, BackendError> {
        Ok(match self.describe_one(task_id).await? {
            None => true,
            Some(t) => t.desired_status() == Some("STOPPED") || t.last_status() == Some("STOPPED"),
        })
    }
}

impl Backend for EcsBackend {
    fn kind(&self) -> &'static str {
        "ecs"
    }

    /// A place among the launches whose SSM write comes within about a second.
    async fn ready_to_launch(&self) -> LaunchSlot {
        match &self.ssm_writes {
            Some(pacer) => LaunchSlot::held(pacer.reserve().await),
            None => LaunchSlot::free(),
        }
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Task, BackendError> {
        let LaunchRequest { tags, jit_config } = request;
        let placements = placements(&self.launch)?;
        let name = handoff_name(
            &self.launch.parameter_prefix,
            &tags.pool,
            &tags.runner_name,
            &self.region,
        )?;
        let tier = tier_for(jit_config.expose_secret().len())?;
        self.put_handoff(&name, &jit_config, tier, &tags).await?;
        drop(jit_config);
        // A capacity refusal on one provider is retried on the next at once (Spot, then
        // on-demand); any other failure, or the last provider's, ends the launch.
        let to_try = {
            let resting = self.resting.lock().expect("resting providers poisoned");
            placements_to_try(&placements, &resting, Instant::now())
        };
        let mut fallbacks = Vec::new();
        for (i, placement) in to_try.iter().enumerate() {
            match self.run_task(&name, &tags, placement).await {
                Ok(mut task) => {
                    tracing::debug!(pool = %tags.pool, runner = %tags.runner_name, task = %task.id, parameter = %name, "runner task started");
                    self.resting
                        .lock()
                        .expect("resting providers poisoned")
                        .remove(&placement.to_string());
                    task.launch_fallbacks = fallbacks;
                    return Ok(task);
                }
                Err(BackendError::Capacity(said)) if i + 1 < to_try.len() => {
                    tracing::warn!(
                        pool = %tags.pool, runner = %tags.runner_name, from = %placement,
                        to = %to_try[i + 1], error = %said,
                        "no capacity on this capacity provider; trying the next at once"
                    );
                    self.resting
                        .lock()
                        .expect("resting providers poisoned")
                        .insert(
                            placement.to_string(),
                            Instant::now() + REFUSED_PROVIDER_REST,
                        );
                    fallbacks.push(format!("{placement}: {said}"));
                }
                Err(error) => return Err(self.discard_handoff(&name, error).await),
            }
        }
        unreachable!("placements_to_try() never returns an empty list")
    }

    async fn list(&self, pool: &str) -> Result<Vec<Task>, BackendError> {
        let mut seen = HashSet::new();
        let arns: Vec<String> = self
            .task_arns(&started_by(pool))
            .await?
            .into_iter()
            .filter(|arn| seen.insert(arn.clone()))
            .collect();
        let mut tasks = Vec::new();
        for batch in arns.chunks(DESCRIBE_TASKS_BATCH) {
            // A task listed a moment ago may be gone (a MISSING failure): it is simply absent.
            tasks.extend(
                self.describe_batch(batch)
                    .await?
                    .into_iter()
                    .filter(|t| t.tags.pool == pool),
            );
        }
        tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tasks)
    }

    /// DescribeTasks keeps a stopped task about an hour: its `stoppedAt` and the rest, in
    /// batches of [`DESCRIBE_TASKS_BATCH`]. A failed batch is logged and left out (its tasks'
    /// bills are then estimated from when they left the listing).
    async fn describe_gone(&self, task_ids: &[String]) -> Vec<Task> {
        let mut tasks = Vec::new();
        for batch in task_ids.chunks(DESCRIBE_TASKS_BATCH) {
            match self.describe_batch(batch).await {
                Ok(described) => tasks.extend(described),
                Err(error) => {
                    tracing::warn!(%error, tasks = batch.len(), "describing stopped tasks for their bill failed; their stop time is estimated");
                }
            }
        }
        tasks
    }

    /// DescribeTasks keeps a stopped task about an hour: its `stopCode` and `stoppedReason`.
    async fn stop_details(&self, task_id: &str) -> Option<StopDetails> {
        let task = self.describe_one(task_id).await.ok()??;
        Some(StopDetails {
            code: task.stop_code().map(|c| c.as_str().to_string()),
            reason: task.stopped_reason().map(str::to_string),
        })
    }

    async fn stop(&self, task_id: &str, reason: &str) -> Result<(), BackendError> {
        let answer = self
            .ecs
            .stop_task()
            .cluster(&self.launch.cluster)
            .task(task_id)
            .reason(truncate_chars(reason, STOP_REASON_MAX_CHARS))
            .send()
            .await;
        let Err(e) = answer else {
            tracing::debug!(task = task_id, reason, "asked ECS to stop the task");
            return Ok(());
        };
        let refused = refusal(&e);
        if is_unknown_task(&refused) {
            return Ok(());
        }
        let error = ecs_error("ecs:StopTask", refused, &self.launch, &self.region);
        if matches!(error, BackendError::Throttled(_)) {
            return Err(error);
        }
        // ECS words "no such task" in more than one way (emulators with a bare 500): look
        // before calling the stop a failure.
        match self.stopped_or_unknown(task_id).await {
            Ok(true) => Ok(()),
            _ => Err(error),
        }
    }

    async fn list_handoffs(&self, pool: &str) -> Result<Vec<Handoff>, BackendError> {
        let path = handoff_path(&self.launch.parameter_prefix, pool);
        let filter = ParameterStringFilter::builder()
            .key("Path")
            .option("OneLevel")
            .values(&path)
            .build()
            .map_err(|e| BackendError::Config(format!("SSM path filter: {e}")))?;
        let mut handoffs = Vec::new();
        let mut token = None;
        loop {
            self.pace_ssm_describe().await;
            let page = self
                .ssm
                .describe_parameters()
                .parameter_filters(filter.clone())
                .max_results(DESCRIBE_PARAMETERS_PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    ssm_error(
                        "ssm:DescribeParameters",
                        refusal(&e),
                        &path,
                        &self.launch,
                        &self.region,
                    )
                })?;
            for p in page.parameters() {
                let Some(name) = p.name() else { continue };
                let Some(runner_name) = name
                    .strip_prefix(path.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                else {
                    continue;
                };
                handoffs.push(Handoff {
                    name: name.to_string(),
                    pool: pool.to_string(),
                    runner_name: runner_name.to_string(),
                    created_at: p
                        .last_modified_date()
                        .and_then(to_chrono)
                        .unwrap_or_else(Utc::now),
                });
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        handoffs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(handoffs)
    }

    async fn delete_handoff(&self, name: &str) -> Result<(), BackendError> {
        self.pace_ssm_write().await;
        match self.ssm.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let refused = refusal(&e);
                if refused.code() == Some("ParameterNotFound") {
                    return Ok(());
                }
                Err(ssm_error(
                    "ssm:DeleteParameter",
                    refused,
                    name,
                    &self.launch,
                    &self.region,
                ))
            }
        }
    }
}

/// The runner container's environment: where its JIT configuration waits, its name, and the
/// pool's scope. Never the JIT value itself.
fn task_environment(
    parameter: &str,
    runner_name: &str,
    scope: Option<&Scope>,
) -> Vec<(&'static str, String)> {
    let mut environment = vec![
        (ENV_JIT_CONFIG_PARAMETER, parameter.to_string()),
        (ENV_RUNNER_NAME, runner_name.to_string()),
        // A task RunTask starts belongs to no service, so it cannot have scale-in protection:
        // the agent should not ask for it around every job.
        (ENV_TASK_PROTECTION, "off".to_string()),
    ];
    match scope {
        None => {}
        Some(Scope::Repo { owner, repo }) => environment.extend([
            ("RUNNER_SCOPE", "repo".to_string()),
            ("GITHUB_REPOSITORY", format!("{owner}/{repo}")),
        ]),
        Some(Scope::Org { org }) => environment.extend([
            ("RUNNER_SCOPE", "org".to_string()),
            ("GITHUB_ORG", org.clone()),
        ]),
    }
    environment
}

/// How a task gets its compute: a launch type or a capacity provider.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Placement {
    LaunchType(LaunchType),
    CapacityProvider(String),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::LaunchType(t) => write!(f, "launch type {}", t.as_str()),
            Placement::CapacityProvider(p) => write!(f, "capacity provider {p}"),
        }
    }
}

impl Placement {
    fn provider(&self) -> Option<&str> {
        match self {
            Placement::CapacityProvider(p) => Some(p),
            Placement::LaunchType(_) => None,
        }
    }

    /// The task-definition compatibility it needs, where that is known.
    fn compatibility(&self) -> Option<&'static str> {
        match self {
            Placement::LaunchType(LaunchType::Fargate) => Some("FARGATE"),
            Placement::LaunchType(LaunchType::Ec2) => Some("EC2"),
            Placement::LaunchType(LaunchType::External) => Some("EXTERNAL"),
            Placement::CapacityProvider(p) if p == "FARGATE" || p == "FARGATE_SPOT" => {
                Some("FARGATE")
            }
            _ => None,
        }
    }
}

/// How long a capacity provider that refused for capacity is passed over while a later one
/// remains: capacity comes back over minutes, not from one call to the next, and asking it first
/// for every launch of a burst would double the RunTask calls under ECS's per-account rate. It
/// is asked again after this, and always when it is the last one.
const REFUSED_PROVIDER_REST: Duration = Duration::from_secs(30);

/// The placements a launch tries now, in order: all of them but those resting after a capacity
/// refusal (`resting`: name -> until when); the last is never left out.
fn placements_to_try(
    placements: &[Placement],
    resting: &HashMap<String, Instant>,
    now: Instant,
) -> Vec<Placement> {
    let last = placements.len().saturating_sub(1);
    placements
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            *i == last
                || resting
                    .get(&p.to_string())
                    .is_none_or(|until| *until <= now)
        })
        .map(|(_, p)| p.clone())
        .collect()
}

/// Where a launch may go, in order: the pool's capacity providers, else its launch type.
fn placements(launch: &EcsLaunch) -> Result<Vec<Placement>, BackendError> {
    let providers = launch.providers();
    match (&launch.launch_type, providers.is_empty()) {
        (Some(_), false) => Err(BackendError::Config(
            "both `launch_type` and `capacity_providers` are set; ECS takes one. Fix: remove one of them"
                .to_string(),
        )),
        (None, false) => {
            if providers.iter().any(|p| p.trim().is_empty()) {
                return Err(BackendError::Config(
                    "a capacity provider's name is empty. Fix: name each capacity provider (e.g. FARGATE_SPOT) or remove it"
                        .to_string(),
                ));
            }
            Ok(providers.into_iter().map(Placement::CapacityProvider).collect())
        }
        (None, true) => Ok(vec![Placement::LaunchType(LaunchType::Fargate)]),
        (Some(kind), true) => match kind.to_ascii_uppercase().as_str() {
            "FARGATE" => Ok(vec![Placement::LaunchType(LaunchType::Fargate)]),
            "EC2" => Ok(vec![Placement::LaunchType(LaunchType::Ec2)]),
            "EXTERNAL" => Ok(vec![Placement::LaunchType(LaunchType::External)]),
            _ => Err(BackendError::Config(format!(
                "`launch_type` {kind:?} is not an ECS launch type. Fix: use FARGATE, EC2 or EXTERNAL \
                 (or `capacity_providers` for FARGATE_SPOT and Auto Scaling groups)"
            ))),
        },
    }
}

/// ECS's `startedBy` for a pool: `hangar/<pool>` when that fits the 36 allowed characters,
/// else a prefix of the pool plus a stable hash. It only narrows ListTasks (tags decide), so a
/// collision costs a larger listing, never a wrong answer.
fn started_by(pool: &str) -> String {
    const PREFIX: &str = "hangar/";
    let clean: String = pool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean == pool && PREFIX.len() + clean.len() <= STARTED_BY_MAX_CHARS {
        return format!("{PREFIX}{clean}");
    }
    let hash = format!("{:08x}", fnv1a(pool.as_bytes()) as u32);
    let room = STARTED_BY_MAX_CHARS - PREFIX.len() - 1 - hash.len();
    let head: String = clean.chars().take(room).collect();
    format!("{PREFIX}{head}-{hash}")
}

/// A stable hash (the same in every process and version, unlike std's).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `{prefix}/{pool}`, the folder a pool's one-shot parameters live in.
fn handoff_path(prefix: &str, pool: &str) -> String {
    format!("{}/{pool}", prefix.trim_end_matches('/'))
}

/// The one-shot parameter's name, checked against SSM's rules (the length of its ARN in
/// `region` included) so a bad prefix is a configuration error before anything is written.
/// (`controller::preflight` names its probe resource with it too.)
pub(crate) fn handoff_name(
    prefix: &str,
    pool: &str,
    runner_name: &str,
    region: &str,
) -> Result<String, BackendError> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if !prefix.starts_with('/')
        || !prefix.chars().all(|c| name_char(c) || c == '/')
        || prefix.contains("//")
    {
        return Err(BackendError::Config(format!(
            "`parameter_prefix` {prefix:?} is not an SSM path. Fix: use a path like /hangar/jit \
             (starts with '/', then letters, digits, '_', '.', '-' and single '/')"
        )));
    }
    let lower = prefix.to_ascii_lowercase();
    if lower.starts_with("/aws") || lower.starts_with("/ssm") {
        return Err(BackendError::Config(format!(
            "`parameter_prefix` {prefix:?} starts with a name AWS reserves (aws, ssm). Fix: use a path \
             like /hangar/jit"
        )));
    }
    for (what, part) in [("pool", pool), ("runner name", runner_name)] {
        if part.is_empty() || !part.chars().all(name_char) {
            return Err(BackendError::Config(format!(
                "{what} {part:?} cannot be part of an SSM parameter name. Fix: use only letters, \
                 digits, '_', '.' and '-'"
            )));
        }
    }
    let name = format!("{}/{runner_name}", handoff_path(prefix, pool));
    let arn_len = PARAMETER_ARN_OVERHEAD + region.len() + name.len();
    if name.matches('/').count() > PARAMETER_DEPTH_MAX || arn_len > PARAMETER_ARN_MAX {
        return Err(BackendError::Config(format!(
            "SSM parameter name {name:?} is too deep or too long (at most {PARAMETER_DEPTH_MAX} levels, \
             and at most {PARAMETER_ARN_MAX} characters counting its ARN, {arn_len} here). \
             Fix: shorten `parameter_prefix`"
        )));
    }
    Ok(name)
}

/// The SSM tier that holds a value of `bytes`: Standard up to 4 KB, Advanced up to 8 KB.
fn tier_for(bytes: usize) -> Result<ParameterTier, BackendError> {
    if bytes <= STANDARD_TIER_MAX_BYTES {
        Ok(ParameterTier::Standard)
    } else if bytes <= ADVANCED_TIER_MAX_BYTES {
        Ok(ParameterTier::Advanced)
    } else {
        Err(BackendError::Config(format!(
            "the JIT configuration is {bytes} bytes, more than an SSM parameter holds \
             ({ADVANCED_TIER_MAX_BYTES}). Fix: fewer runner labels"
        )))
    }
}

fn ecs_tags(tags: &TaskTags) -> Vec<Tag> {
    [
        (TAG_POOL, tags.pool.clone()),
        (TAG_RUNNER_NAME, tags.runner_name.clone()),
        (TAG_RUNNER_ID, tags.runner_id.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| Tag::builder().key(key).value(value).build())
    .collect()
}

/// The Hangar tags of a task, if it has all three.
fn tags_of(tags: &[Tag]) -> Option<TaskTags> {
    let get = |key: &str| {
        tags.iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .filter(|v| !v.is_empty())
    };
    Some(TaskTags {
        pool: get(TAG_POOL)?.to_string(),
        runner_name: get(TAG_RUNNER_NAME)?.to_string(),
        runner_id: get(TAG_RUNNER_ID)?.parse().ok()?,
    })
}

/// ECS's `lastStatus` (and `desiredStatus`, which turns STOPPED as soon as a stop is asked
/// for) as a [`TaskState`]. A status ECS adds later counts as pending: not yet running, so
/// never taken for a live runner.
fn state_of(last: Option<&str>, desired: Option<&str>) -> TaskState {
    match last.unwrap_or_default() {
        "STOPPED" | "DELETED" => TaskState::Stopped,
        "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => TaskState::Stopping,
        _ if desired == Some("STOPPED") => TaskState::Stopping,
        "RUNNING" => TaskState::Running,
        _ => TaskState::Pending,
    }
}

/// A described ECS task as a [`Task`], or `None` when it lacks Hangar's tags. A task without a
/// `createdAt` (which ECS always sets) is dated `now`, so no reaper takes it for an old one.
fn task_of(t: &aws_sdk_ecs::types::Task, now: DateTime<Utc>) -> Option<Task> {
    Some(Task {
        id: t.task_arn()?.to_string(),
        tags: tags_of(t.tags())?,
        state: state_of(t.last_status(), t.desired_status()),
        created_at: t.created_at().and_then(to_chrono).unwrap_or(now),
        stop_reason: t
            .stopped_reason()
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        capacity_provider: t.capacity_provider_name().map(str::to_string),
        launch_fallbacks: Vec::new(),
        times: times_of(t),
        log: None,
    })
}

fn times_of(t: &aws_sdk_ecs::types::Task) -> TaskTimes {
    TaskTimes {
        pull_started_at: t.pull_started_at().and_then(to_chrono),
        pull_stopped_at: t.pull_stopped_at().and_then(to_chrono),
        started_at: t.started_at().and_then(to_chrono),
        stopped_at: t.stopped_at().and_then(to_chrono),
    }
}

/// Both SDKs' timestamps are `aws_smithy_types::DateTime`.
fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// What AWS answered to a failed call, reduced to what the classification needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// AWS answered with an error code.
    Service(Answer),
    /// No answer: the connection, a timeout, or an unreadable response.
    NoAnswer(String),
}

/// An error answer: AWS's code and message, and the HTTP status it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    code: String,
    message: String,
    status: u16,
}

impl Refusal {
    fn code(&self) -> Option<&str> {
        match self {
            Refusal::Service(answer) => Some(&answer.code),
            Refusal::NoAnswer(_) => None,
        }
    }
}

impl Answer {
    fn is_throttling(&self) -> bool {
        crate::aws::is_throttling(&self.code, &self.message) || self.status == 429
    }

    fn is_server_side(&self) -> bool {
        matches!(
            self.code.as_str(),
            "ServerException"
                | "InternalFailure"
                | "InternalServerError"
                | "InternalServerException"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
        ) || self.status >= 500
    }
}

fn refusal<E>(e: &SdkError<E, aws_sdk_ecs::config::http::HttpResponse>) -> Refusal
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match crate::aws::service_error(e) {
        Some((code, message)) => Refusal::Service(Answer {
            code,
            message,
            status: e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
        }),
        None => Refusal::NoAnswer(DisplayErrorContext(e).to_string()),
    }
}

/// StopTask's answer for a task ECS does not know (`The referenced task was not found.`).
fn is_unknown_task(refused: &Refusal) -> bool {
    matches!(refused, Refusal::Service(answer)
        if answer.code == "InvalidParameterException"
            && answer.message.to_ascii_lowercase().contains("not found"))
}

fn no_answer(action: &str, service: &str, region: &str, cause: &str) -> BackendError {
    BackendError::Unavailable(format!(
        "{action} got no answer from {service} in region {region}: {cause}. Fix: check the network \
         path to AWS and the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or the task role)"
    ))
}

/// A denied action: the fix is the permission it needs.
fn denied(said: &str, action: &str, launch: &EcsLaunch, region: &str) -> BackendError {
    BackendError::Config(format!(
        "{said}. Fix: allow {} to the identity running hangar",
        permission_for(action, launch, region)
    ))
}

/// A failure that may pass (AWS's side, or an answer that says nothing more).
fn try_again(said: &str) -> BackendError {
    BackendError::Unavailable(format!("{said}; trying again on the next pass"))
}

/// What to allow for an action that was denied.
fn permission_for(action: &str, launch: &EcsLaunch, region: &str) -> String {
    let parameters = format!(
        "arn:aws:ssm:{region}:ACCOUNT:parameter{}/*",
        launch.parameter_prefix.trim_end_matches('/')
    );
    match action {
        "ecs:RunTask" => format!(
            "ecs:RunTask on task definition {:?} and ecs:TagResource (tags on create), plus \
             iam:PassRole on the task definition's task and execution roles",
            launch.task_definition
        ),
        "ssm:PutParameter" | "ssm:DeleteParameter" => format!(
            "{action} on {parameters} (and kms:Encrypt/kms:Decrypt on the key, if not the AWS \
             managed aws/ssm key)"
        ),
        "ssm:DescribeParameters" => "ssm:DescribeParameters (resource *)".to_string(),
        other => format!("{other} on cluster {:?}", launch.cluster),
    }
}

/// The launch settings a refusal's message points at, with their values.
fn settings_named_in(message: &str, launch: &EcsLaunch) -> Vec<String> {
    let m: String = message
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect();
    let mut named: Vec<String> = Vec::new();
    let mut add = |setting: &str, value: String| {
        let entry = format!("`{setting}` ({value})");
        if !named.contains(&entry) {
            named.push(entry);
        }
    };
    let list = |v: &[String]| format!("{v:?}");
    if m.contains("container") && !m.contains("containerinstance") {
        add("container_name", format!("{:?}", launch.container_name));
    }
    if m.contains("taskdefinition") {
        add("task_definition", format!("{:?}", launch.task_definition));
    }
    if m.contains("subnet") || m.contains("networkconfiguration") || m.contains("awsvpc") {
        add("subnets", list(&launch.subnets));
    }
    if m.contains("securitygroup") || m.contains("networkconfiguration") {
        add("security_groups", list(&launch.security_groups));
    }
    if m.contains("publicip") {
        add("assign_public_ip", launch.assign_public_ip.to_string());
    }
    if m.contains("launchtype") || m.contains("platform") {
        add("launch_type", format!("{:?}", launch.launch_type));
    }
    if m.contains("capacityprovider") {
        add("capacity_providers", format!("{:?}", launch.providers()));
    }
    if m.contains("cluster") && !m.contains("containerinstance") {
        add("cluster", format!("{:?}", launch.cluster));
    }
    named
}

fn cluster_missing(launch: &EcsLaunch, region: &str) -> BackendError {
    BackendError::Config(format!(
        "ECS cluster {:?} does not exist in region {region}. Fix: set `cluster` to the cluster the \
         runners run in (or AWS_REGION to its region)",
        launch.cluster
    ))
}

fn task_definition_error(launch: &EcsLaunch, region: &str, said: &str) -> BackendError {
    BackendError::Config(format!(
        "task definition {:?} cannot be used in region {region}: {said}. Fix: set `task_definition` \
         to an ACTIVE family, family:revision or ARN",
        launch.task_definition
    ))
}

/// Sorts an ECS refusal into what the controller does about it.
fn ecs_error(
    action: &'static str,
    refused: Refusal,
    launch: &EcsLaunch,
    region: &str,
) -> BackendError {
    let answer = match refused {
        Refusal::NoAnswer(cause) => return no_answer(action, "ECS", region, &cause),
        Refusal::Service(answer) => answer,
    };
    let said = format!("{action} was refused ({}: {})", answer.code, answer.message);
    if answer.is_throttling() {
        return BackendError::Throttled(format!("{said}; backing off"));
    }
    if crate::aws::is_access_denied(&answer.code) {
        return denied(&said, action, launch, region);
    }
    if answer.code == "ClusterNotFoundException" {
        return cluster_missing(launch, region);
    }
    if answer.is_server_side() {
        return try_again(&said);
    }
    let settings = settings_named_in(&answer.message, launch);
    let fix = if settings.is_empty() {
        format!(
            "check the pool's ECS launch settings (cluster {:?}, task definition {:?}, region {region})",
            launch.cluster, launch.task_definition
        )
    } else {
        format!(
            "check {} in the pool's ECS launch settings",
            settings.join(", ")
        )
    };
    BackendError::Config(format!("{said}. Fix: {fix}"))
}

/// Sorts a RunTask `failures` entry (the task was not started) into what the controller does.
fn failure_error(reason: &str, detail: Option<&str>, launch: &EcsLaunch) -> BackendError {
    let said = match detail.filter(|d| !d.is_empty()) {
        Some(detail) => format!("ECS could not start the task: {reason} ({detail})"),
        None => format!("ECS could not start the task: {reason}"),
    };
    let r = reason.to_ascii_uppercase();
    if r.contains("THROTTL") || r.contains("RATE EXCEEDED") {
        return BackendError::Throttled(said);
    }
    // RESOURCE:CPU|MEMORY|PORTS_TCP|PORTS_UDP|ENI|GPU: no instance has room; AGENT: the instance
    // picked lost its agent; Fargate's "Capacity is unavailable at this time"; the vCPU quota
    // and the PROVISIONING-tasks limit free up as tasks end.
    if r.starts_with("RESOURCE:")
        || r.starts_with("AGENT")
        || r.contains("CAPACITY")
        || r.contains("LIMIT")
        || r.contains("RESOURCE TEMPORARILY UNAVAILABLE")
    {
        return BackendError::Capacity(said);
    }
    if r.starts_with("ATTRIBUTE") {
        return BackendError::Config(format!(
            "{said}. Fix: no container instance of cluster {:?} has an attribute the task definition \
             {:?} requires (placement constraints, requiresAttributes): change `task_definition` or the \
             cluster's instances",
            launch.cluster, launch.task_definition
        ));
    }
    if r == "MISSING" || r.contains("INACTIVE") {
        return BackendError::Config(format!(
            "{said}. Fix: check `cluster` ({:?}) and `task_definition` ({:?})",
            launch.cluster, launch.task_definition
        ));
    }
    try_again(&said)
}

/// Sorts an SSM refusal about parameter (or path) `name`.
fn ssm_error(
    action: &'static str,
    refused: Refusal,
    name: &str,
    launch: &EcsLaunch,
    region: &str,
) -> BackendError {
    let answer = match refused {
        Refusal::NoAnswer(cause) => return no_answer(action, "SSM", region, &cause),
        Refusal::Service(answer) => answer,
    };
    let code = answer.code.as_str();
    let said = format!("{action} {name} was refused ({code}: {})", answer.message);
    if code == "ParameterAlreadyExists" {
        return BackendError::Unavailable(format!(
            "the one-shot parameter {name} already exists, so runner names clashed (or an earlier \
             launch of this runner left it); it was not overwritten. Fix: launch under a new runner \
             name; the reaper deletes leftover parameters"
        ));
    }
    if answer.is_throttling() {
        return BackendError::Throttled(format!(
            "{said}; backing off (SSM takes only a few writes and DescribeParameters calls a second per \
             account and region by default: lower `controller.ssm_writes_per_second`, or turn on SSM's higher throughput)"
        ));
    }
    if crate::aws::is_access_denied(code) || code.contains("KMS") || code == "InvalidKeyId" {
        return denied(&said, action, launch, region);
    }
    if code == "ParameterLimitExceeded" {
        return BackendError::Capacity(format!(
            "{said}: the account holds as many SSM parameters as the region allows. Fix: delete \
             unused parameters (the reaper deletes leftover one-shot ones)"
        ));
    }
    if answer.is_server_side() {
        return try_again(&said);
    }
    BackendError::Config(format!(
        "{said}. Fix: check `parameter_prefix` ({:?}) in the pool's ECS launch settings",
        launch.parameter_prefix
    ))
}

/// The same error with `note` appended to its message.
fn with_note(error: BackendError, note: &str) -> BackendError {
    match error {
        BackendError::Capacity(m) => BackendError::Capacity(m + note),
        BackendError::Throttled(m) => BackendError::Throttled(m + note),
        BackendError::Config(m) => BackendError::Config(m + note),
        BackendError::Unavailable(m) => BackendError::Unavailable(m + note),
    }
}

#[cfg(test)]
mod tests;
