use super::*;
use crate::model::EmbeddedModel;

fn health() -> Health {
    Health::new(Arc::new(EmbeddedModel::default_model(1).unwrap()))
}

#[test]
fn ready_until_the_stream_fails_or_shutdown_begins() {
    let health = health();
    assert_eq!(health.readiness(), Ok(()));

    health.stream_failed("ListShards: ResourceNotFoundException");
    assert_eq!(health.readiness(), Err(NotReady::Stream));
    assert_eq!(
        health.stream_failure().as_deref(),
        Some("ListShards: ResourceNotFoundException")
    );
    health.stream_ok();
    assert_eq!(health.readiness(), Ok(()));

    health.stream_failed("GetRecords: timeout");
    health.shard_read("shardId-000000000000");
    assert_eq!(
        health.readiness(),
        Ok(()),
        "a successful read clears the failure"
    );

    health.begin_shutdown();
    health.stream_failed("GetRecords: timeout");
    assert_eq!(
        health.readiness(),
        Err(NotReady::ShuttingDown),
        "shutdown is the first reason given"
    );
}

#[tokio::test(start_paused = true)]
async fn shards_are_tracked_until_their_reader_is_done() {
    let health = health();
    health.shard_read("shard-a");
    let first = health.shards()["shard-a"].last_read;
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    health.shard_read("shard-a");
    health.shard_read("shard-b");
    let shards = health.shards();
    assert_eq!(shards.len(), 2);
    assert_eq!(
        shards["shard-a"].last_read - first,
        std::time::Duration::from_secs(2)
    );
    health.shard_done("shard-a");
    assert_eq!(health.shards().keys().collect::<Vec<_>>(), ["shard-b"]);
}

#[test]
fn a_shard_held_by_a_model_outage_makes_the_gateway_unready_naming_it() {
    let health = health();
    health.shard_read("shardId-000000000001");
    health.shard_scoring_failed("shardId-000000000001", "model_error: endpoint down");
    let Err(NotReady::Shards(problems)) = health.readiness() else {
        panic!("{:?}", health.readiness());
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].shard_id, "shardId-000000000001");
    let detail = NotReady::Shards(problems).to_string();
    assert!(
        detail.contains("shardId-000000000001") && detail.contains("endpoint down"),
        "{detail}"
    );
    health.shard_read("shardId-000000000001");
    assert!(
        health.readiness().is_err(),
        "a read does not clear it: the page in hand is still unscored"
    );
    health.shard_scored("shardId-000000000001");
    assert_eq!(health.readiness(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_shard_not_read_for_the_stall_timeout_makes_the_gateway_unready() {
    let health = health();
    health.shard_started("shard-a");
    tokio::time::advance(std::time::Duration::from_secs(60)).await;
    assert_eq!(
        health.readiness(),
        Ok(()),
        "no stall timeout before a consumer watches"
    );

    health.watch_shards("tx", std::time::Duration::from_secs(30));
    health.shard_read("shard-a");
    health.shard_started("shard-b");
    tokio::time::advance(std::time::Duration::from_secs(20)).await;
    health.shard_failed("shard-b", "GetShardIterator: InvalidArgumentException");
    health.shard_started("shard-b");
    health.shard_read("shard-a");
    assert_eq!(health.readiness(), Ok(()));
    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    let Err(NotReady::Shards(problems)) = health.readiness() else {
        panic!("{:?}", health.readiness());
    };
    assert_eq!(
        problems.len(),
        1,
        "a restart does not reset the clock: {problems:?}"
    );
    assert_eq!(problems[0].shard_id, "shard-b");
    assert!(
        problems[0].reason.contains("30.0 s")
            && problems[0].reason.contains("InvalidArgumentException"),
        "{}",
        problems[0].reason
    );
    assert_eq!(health.stalled_shards(), 1);

    health.shard_read("shard-b");
    assert_eq!(health.readiness(), Ok(()));
    assert_eq!(health.stalled_shards(), 0);
    tokio::time::advance(std::time::Duration::from_secs(31)).await;
    assert_eq!(health.stalled_shards(), 2);
    let Err(NotReady::Shards(problems)) = health.readiness() else {
        panic!("{:?}", health.readiness());
    };
    assert!(
        problems[0].reason.contains("no error reported"),
        "{problems:?}"
    );
    health.shard_done("shard-a");
    health.shard_done("shard-b");
    assert_eq!(health.readiness(), Ok(()), "ended shards do not stall");
}
