//! What a runner task costs on Fargate, and how that bill splits between the job it ran and the
//! time it waited. Pure arithmetic: no I/O, no clock. A figure is made from three things:
//!
//! - the task's **size** ([`TaskSize`]: vCPU, memory, ephemeral storage, architecture, Spot or
//!   not), as the pool file states it (`cpu`, `memory`, `cpu_architecture`,
//!   `ephemeral_storage_gib`, and whether the task ran on `FARGATE_SPOT`);
//! - its **billed time** ([`billed_seconds`]): Fargate bills "from the time you start to download
//!   your container image until the Amazon ECS Task terminates, rounded up to the nearest
//!   second", with a one-minute minimum (Linux);
//! - a **price table** per region ([`PriceTable`]): the public Fargate prices, with the date
//!   they were read ([`PRICES_AS_OF`]); a pool file may override them.
//!
//! A task's bill splits into the **job's share**, its part of the billed time while the job ran
//! ([`split`]), and **overhead**: image pull, start-up, waiting for a job, shutting down, and the
//! one-minute minimum's padding. A task that never took a job (a warm `min_idle` runner, one
//! recycled or dropped) is overhead whole. Limits: no data transfer, NAT gateway, public IPv4,
//! CloudWatch Logs or SSM charges, no Savings Plans, and Spot prices move (the table's are a
//! snapshot): the figures are for comparing pools and jobs, not for reconciling an invoice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::EcsLaunch;

/// When the built-in prices were read from the public Fargate pricing page.
pub const PRICES_AS_OF: &str = "2026-12-07";

/// Ephemeral storage every Fargate task gets without charge (GiB).
pub const FREE_STORAGE_GIB: f64 = 20.0;

/// The shortest bill of a Linux Fargate task.
pub const MINIMUM_BILLED_SECONDS: f64 = 60.0;

/// Per-hour prices of one kind of capacity (USD).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub vcpu_hour: f64,
    pub gb_hour: f64,
    /// Per GB-hour of ephemeral storage above [`FREE_STORAGE_GIB`].
    pub storage_gb_hour: f64,
}

/// A region's Fargate prices for Linux tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub region: String,
    /// When the prices were read (the built-in table's: [`PRICES_AS_OF`]).
    pub as_of: String,
    pub x86_64: Rates,
    pub arm64: Rates,
    /// Fargate Spot (X86_64 only: Fargate Spot runs no ARM64 task). Spot prices change with
    /// supply; the built-in ones are a snapshot.
    pub spot_x86_64: Rates,
}

impl PriceTable {
    /// The built-in table for `region`, if it has one: US East (N. Virginia) only, the one
    /// whose prices were read; other regions need the pool file's table.
    pub fn builtin(region: &str) -> Option<PriceTable> {
        let storage_gb_hour = 0.000111;
        match region {
            "us-east-1" => Some(PriceTable {
                region: region.to_string(),
                as_of: PRICES_AS_OF.to_string(),
                x86_64: Rates {
                    vcpu_hour: 0.04048,
                    gb_hour: 0.004445,
                    storage_gb_hour,
                },
                arm64: Rates {
                    vcpu_hour: 0.03238,
                    gb_hour: 0.00356,
                    storage_gb_hour,
                },
                // About 70% below on-demand, as Fargate Spot was quoted when read.
                spot_x86_64: Rates {
                    vcpu_hour: 0.01214087,
                    gb_hour: 0.00133308,
                    storage_gb_hour,
                },
            }),
            _ => None,
        }
    }

    /// The rates for a task of `size`.
    pub fn rates(&self, size: &TaskSize) -> Rates {
        match (size.architecture, size.spot) {
            (Architecture::X86_64, true) => self.spot_x86_64,
            (Architecture::X86_64, false) => self.x86_64,
            // No such task runs (Fargate Spot is X86_64 only); priced on demand if asked.
            (Architecture::Arm64, _) => self.arm64,
        }
    }
}

/// A task's CPU architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Architecture {
    #[serde(rename = "X86_64")]
    X86_64,
    Arm64,
}

/// What a task is billed for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TaskSize {
    pub vcpu: f64,
    pub memory_gib: f64,
    /// Ephemeral storage the task definition asks for (GiB; 20 when it asks for none).
    pub storage_gib: f64,
    pub architecture: Architecture,
    pub spot: bool,
}

impl TaskSize {
    /// From the task definition's units: CPU units (1,024 a vCPU) and MiB.
    pub fn from_units(
        cpu_units: u32,
        memory_mib: u32,
        storage_gib: Option<u32>,
        architecture: Architecture,
        spot: bool,
    ) -> TaskSize {
        TaskSize {
            vcpu: f64::from(cpu_units) / 1024.0,
            memory_gib: f64::from(memory_mib) / 1024.0,
            storage_gib: storage_gib.map_or(FREE_STORAGE_GIB, f64::from),
            architecture,
            spot,
        }
    }
}

impl TaskSize {
    /// The size of a pool's task that ran on `capacity_provider` (the task's
    /// `capacityProviderName`; `None`: the pool's launch type), from the shape the pool file
    /// states. `None` when the file states no cpu or memory, or the task ran on capacity that is
    /// not Fargate (EC2 instances are billed per instance, not per task).
    pub fn of_pool(launch: &EcsLaunch, capacity_provider: Option<&str>) -> Option<TaskSize> {
        let fargate = match capacity_provider {
            Some(p) => p.eq_ignore_ascii_case("FARGATE") || p.eq_ignore_ascii_case("FARGATE_SPOT"),
            None => launch
                .launch_type
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case("FARGATE")),
        };
        if !fargate {
            return None;
        }
        let architecture = match launch.cpu_architecture.as_deref() {
            Some(a) if a.eq_ignore_ascii_case("ARM64") => Architecture::Arm64,
            _ => Architecture::X86_64,
        };
        Some(TaskSize::from_units(
            launch.cpu?,
            launch.memory?,
            launch.ephemeral_storage_gib,
            architecture,
            capacity_provider.is_some_and(|p| p.eq_ignore_ascii_case("FARGATE_SPOT")),
        ))
    }
}

/// USD as people read them: two decimals from a dollar, four from a cent, and below a cent
/// enough to see it (a short job's share is a few thousandths of a cent): `$12.50`, `$0.0042`,
/// `$0.000027`.
pub fn dollars(amount: f64) -> String {
    if !amount.is_finite() {
        return "$?".to_string();
    }
    match amount.abs() {
        a if a >= 1.0 => format!("${amount:.2}"),
        a if a >= 0.01 || a == 0.0 => format!("${amount:.4}"),
        _ => format!("${amount:.6}"),
    }
}

/// The seconds Fargate bills a task that started pulling its image at `pull_started` and
/// stopped at `stopped`: rounded up to the second, at least a minute.
pub fn billed_seconds(pull_started: DateTime<Utc>, stopped: DateTime<Utc>) -> f64 {
    let millis = stopped
        .signed_duration_since(pull_started)
        .num_milliseconds()
        .max(0);
    let seconds = (millis as f64 / 1000.0).ceil();
    seconds.max(MINIMUM_BILLED_SECONDS)
}

/// The price of `seconds` of a task of `size` at `rates` (USD).
pub fn cost(size: &TaskSize, rates: &Rates, seconds: f64) -> f64 {
    let hours = seconds / 3600.0;
    let extra_storage = (size.storage_gib - FREE_STORAGE_GIB).max(0.0);
    hours
        * (size.vcpu * rates.vcpu_hour
            + size.memory_gib * rates.gb_hour
            + extra_storage * rates.storage_gb_hour)
}

/// A task's bill, split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Split {
    /// The whole bill (USD).
    pub task: f64,
    /// The job's share: the bill's part for the seconds the job ran inside the task's billed
    /// window.
    pub job: f64,
    /// The rest: pull, start-up, waiting, shutdown and the minimum's padding.
    pub overhead: f64,
    pub billed_seconds: f64,
    pub job_seconds: f64,
}

/// Splits the bill of a task (billed from `pull_started` to `stopped`) between the job it ran
/// from `job_started` to `job_completed`, if any, and overhead. The job's seconds are those
/// inside the task's window; the one-minute minimum's padding is overhead, so a job shorter than
/// its task's start-up is charged its own seconds only.
pub fn split(
    size: &TaskSize,
    rates: &Rates,
    pull_started: DateTime<Utc>,
    stopped: DateTime<Utc>,
    job: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Split {
    let billed = billed_seconds(pull_started, stopped);
    let task = cost(size, rates, billed);
    let job_seconds = job
        .map(|(started, completed)| {
            let from = started.max(pull_started);
            let to = completed.min(stopped);
            (to.signed_duration_since(from).num_milliseconds().max(0) as f64 / 1000.0).min(billed)
        })
        .unwrap_or(0.0);
    let job_cost = cost(size, rates, job_seconds);
    Split {
        task,
        job: job_cost,
        overhead: task - job_cost,
        billed_seconds: billed,
        job_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "got {got:.12}, want {want:.12}");
    }

    fn us_east() -> PriceTable {
        PriceTable::builtin("us-east-1").unwrap()
    }

    /// 1 vCPU, 2 GiB, X86_64, on demand, default storage.
    fn small() -> TaskSize {
        TaskSize::from_units(1024, 2048, None, Architecture::X86_64, false)
    }

    #[test]
    fn dollars_show_a_short_jobs_share() {
        assert_eq!(dollars(12.5), "$12.50");
        assert_eq!(dollars(0.0421), "$0.0421");
        assert_eq!(dollars(0.0), "$0.0000");
        assert_eq!(dollars(0.0000274), "$0.000027");
        assert_eq!(dollars(f64::NAN), "$?");
    }

    #[test]
    fn billing_is_per_second_rounded_up_with_a_one_minute_minimum() {
        assert_eq!(billed_seconds(at(0), at(0)), 60.0);
        assert_eq!(billed_seconds(at(0), at(59)), 60.0);
        assert_eq!(billed_seconds(at(0), at(61)), 61.0);
        let half = at(61) + chrono::Duration::milliseconds(500);
        assert_eq!(
            billed_seconds(at(0), half),
            62.0,
            "rounded up to the second"
        );
        // A clock that ran backwards bills the minimum, never a negative time.
        assert_eq!(billed_seconds(at(10), at(0)), 60.0);
    }

    #[test]
    fn an_on_demand_task_by_hand() {
        // 1 vCPU x $0.04048 + 2 GiB x $0.004445 = $0.04937 an hour; 10 minutes = $0.0082283...
        let size = small();
        let rates = us_east().rates(&size);
        close(cost(&size, &rates, 600.0), 0.04937 / 6.0);
        // One second short of the minute is billed as the minute: 0.04937 / 60.
        let s = split(&size, &rates, at(0), at(59), None);
        close(s.task, 0.04937 / 60.0);
        close(s.overhead, s.task);
        assert_eq!(s.job, 0.0);
    }

    #[test]
    fn spot_arm64_and_storage_by_hand() {
        let table = us_east();
        // Spot: 2 vCPU x 0.01214087 + 4 GiB x 0.00133308 = 0.02961406 an hour.
        let spot = TaskSize::from_units(2048, 4096, None, Architecture::X86_64, true);
        close(cost(&spot, &table.rates(&spot), 3600.0), 0.02961406);
        // ARM64: 2 vCPU x 0.03238 + 4 GiB x 0.00356 = 0.0790 an hour.
        let arm = TaskSize::from_units(2048, 4096, None, Architecture::Arm64, false);
        close(cost(&arm, &table.rates(&arm), 3600.0), 0.0790);
        // 100 GiB of storage: 80 GiB above the free 20, x 0.000111 = 0.00888 an hour more.
        let disk = TaskSize::from_units(2048, 4096, Some(100), Architecture::Arm64, false);
        close(
            cost(&disk, &table.rates(&disk), 3600.0),
            0.0790 + 80.0 * 0.000111,
        );
    }

    #[test]
    fn a_jobs_share_is_its_seconds_and_the_rest_is_overhead() {
        let size = small();
        let rates = us_east().rates(&size);
        // Pull at 0, job 90..390 (300 s), stop at 400: billed 400 s, the job 300 s of it.
        let s = split(&size, &rates, at(0), at(400), Some((at(90), at(390))));
        assert_eq!(s.billed_seconds, 400.0);
        assert_eq!(s.job_seconds, 300.0);
        close(s.task, 0.04937 * 400.0 / 3600.0);
        close(s.job, 0.04937 * 300.0 / 3600.0);
        close(s.overhead, 0.04937 * 100.0 / 3600.0);
    }

    #[test]
    fn a_job_shorter_than_its_tasks_start_up_pays_its_own_seconds_only() {
        let size = small();
        let rates = us_east().rates(&size);
        // Pull at 0, 40 s of start-up, a 5 s job, stop at 50: billed the minute (60 s); the
        // job's share is 5 s, the pull, start-up and the minimum's padding (55 s) overhead.
        let s = split(&size, &rates, at(0), at(50), Some((at(40), at(45))));
        assert_eq!(s.billed_seconds, 60.0);
        assert_eq!(s.job_seconds, 5.0);
        close(s.job, 0.04937 * 5.0 / 3600.0);
        close(s.overhead, 0.04937 * 55.0 / 3600.0);
        close(s.job + s.overhead, s.task);
    }

    #[test]
    fn job_times_outside_the_tasks_window_are_clipped() {
        let size = small();
        let rates = us_east().rates(&size);
        // The job's times come from GitHub, the task's from ECS: clocks differ. A job said to
        // start before the pull or end after the stop is counted inside the window only.
        let s = split(&size, &rates, at(100), at(400), Some((at(50), at(500))));
        assert_eq!(s.job_seconds, 300.0);
        close(s.overhead, 0.0);
        // A job entirely outside counts nothing.
        let s = split(&size, &rates, at(100), at(400), Some((at(500), at(600))));
        assert_eq!(s.job_seconds, 0.0);
    }

    #[test]
    fn a_pools_stated_shape_and_where_its_task_ran_give_the_size() {
        let mut launch = EcsLaunch::new("c", "t", vec!["s".into()], vec![]);
        assert_eq!(TaskSize::of_pool(&launch, None), None, "no size stated");
        launch.cpu = Some(2048);
        launch.memory = Some(4096);
        launch.ephemeral_storage_gib = Some(50);
        let on_demand = TaskSize::of_pool(&launch, Some("FARGATE")).unwrap();
        assert_eq!(
            on_demand,
            TaskSize {
                vcpu: 2.0,
                memory_gib: 4.0,
                storage_gib: 50.0,
                architecture: Architecture::X86_64,
                spot: false
            }
        );
        assert!(
            TaskSize::of_pool(&launch, Some("FARGATE_SPOT"))
                .unwrap()
                .spot
        );
        assert!(
            !TaskSize::of_pool(&launch, None).unwrap().spot,
            "launch type FARGATE"
        );
        // EC2 capacity (a Docker pool's instances) is billed per instance, not per task.
        assert_eq!(
            TaskSize::of_pool(&launch, Some("hangar-docker-runners")),
            None
        );
        launch.launch_type = Some("EC2".into());
        assert_eq!(TaskSize::of_pool(&launch, None), None);
        launch.launch_type = None;
        launch.cpu_architecture = Some("ARM64".into());
        assert_eq!(
            TaskSize::of_pool(&launch, None).unwrap().architecture,
            Architecture::Arm64
        );
    }

    #[test]
    fn regions_without_a_built_in_table_have_none() {
        assert!(PriceTable::builtin("eu-central-1").is_none());
        let table = us_east();
        assert_eq!(table.as_of, PRICES_AS_OF);
        // A table in TOML, as a pool file would give one for another region.
        let text = r#"
region = "eu-central-1"
as_of = "2026-12-01"
x86_64 = { vcpu_hour = 0.04656, gb_hour = 0.00511, storage_gb_hour = 0.000119 }
arm64 = { vcpu_hour = 0.03725, gb_hour = 0.00409, storage_gb_hour = 0.000119 }
spot_x86_64 = { vcpu_hour = 0.0149, gb_hour = 0.0016, storage_gb_hour = 0.000119 }
"#;
        let frankfurt: PriceTable = toml::from_str(text).unwrap();
        assert_eq!(frankfurt.region, "eu-central-1");
        assert_eq!(frankfurt.arm64.gb_hour, 0.00409);
        let typo = text.replace("gb_hour = 0.00409", "gib_hour = 0.00409");
        assert!(
            toml::from_str::<PriceTable>(&typo).is_err(),
            "unknown fields are refused"
        );
    }
}
