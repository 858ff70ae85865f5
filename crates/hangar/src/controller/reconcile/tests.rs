use super::*;

#[test]
fn backoff_doubles_to_a_cap_with_bounded_jitter() {
    let cap = BackendError::Capacity("x".into());
    assert_eq!(launch_backoff(&cap, 1, 0.0), Duration::from_secs(2));
    assert_eq!(launch_backoff(&cap, 2, 0.0), Duration::from_secs(4));
    assert_eq!(launch_backoff(&cap, 4, 0.0), Duration::from_secs(16));
    assert_eq!(launch_backoff(&cap, 30, 0.0), BACKOFF_CAP);
    assert_eq!(
        launch_backoff(&cap, 1, 0.999),
        Duration::from_secs(2).mul_f64(1.4995)
    );
    let config = BackendError::Config("no such task definition".into());
    assert_eq!(launch_backoff(&config, 1, 0.0), CONFIG_BACKOFF);
}
