//! The one place AWS SDK configuration is loaded: the standard chain (credentials, profile,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`) with the seed's region, us-east-1, when none is set.

use aws_config::{BehaviorVersion, Region, meta::region::RegionProviderChain};

pub async fn load_config() -> aws_config::SdkConfig {
    let region = RegionProviderChain::default_provider()
        .or_else(Region::new(crate::credentials::ssm::DEFAULT_REGION));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}
