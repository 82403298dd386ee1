//! The projector runtime: checkpoint and read model move together, resume after a restart,
//! and two runners of one projection never apply an event twice.

use projections::{catch_up, checkpoints, AuditLog, Projector};
use stream_store::ExpectedVersion;

use crate::harness::test_db;
use crate::store::{events, meta, stream};

async fn audit_rows(pool: &sqlx::PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM audit_log ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_resumes_from_its_checkpoint() {
    let db = test_db().await;
    let s = stream("p");
    db.store
        .append(&s, ExpectedVersion::Any, events(3), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 3);
    // A restarted runner applies nothing twice...
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 0);
    // ...and picks up only what is new.
    db.store
        .append(&s, ExpectedVersion::Any, events(2), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 2);
    assert_eq!(audit_rows(&db.pool).await, vec![1, 2, 3, 4, 5]);
    let cp = checkpoints(&db.pool).await.unwrap();
    assert!(cp.iter().any(|c| c.name == "audit_log" && c.position == 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_runners_of_one_projection_apply_each_event_once() {
    let db = test_db().await;
    for _ in 0..20 {
        db.store
            .append(&stream("race"), ExpectedVersion::Any, events(30), &meta())
            .await
            .unwrap();
    }
    let runners: Vec<_> = (0..4)
        .map(|_| catch_up(&*db.store, &db.pool, &AuditLog))
        .collect();
    let applied: usize = futures::future::join_all(runners)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    assert_eq!(applied, 600, "each event applied by exactly one runner");
    assert_eq!(audit_rows(&db.pool).await, (1..=600).collect::<Vec<_>>());
}

/// A projector that fails on one event: the batch's effects and its checkpoint roll back
/// together, as after a crash in the middle of a batch.
struct FailsAt(i64);

#[async_trait::async_trait]
impl Projector for FailsAt {
    fn name(&self) -> &'static str {
        "audit_log"
    }
    fn tables(&self) -> &'static [&'static str] {
        AuditLog.tables()
    }
    async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[stream_store::RecordedEvent],
    ) -> Result<(), projections::ProjectionError> {
        let Some(at) = events.iter().position(|e| e.position == self.0) else {
            return AuditLog.apply(tx, events).await;
        };
        // Apply what comes before, then abort the transaction the way a crash or a broken
        // statement would.
        AuditLog.apply(tx, &events[..at]).await?;
        sqlx::query("SELECT 1/0").execute(&mut *tx).await?;
        AuditLog.apply(tx, &events[at..]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_leaves_neither_effects_nor_checkpoint() {
    let db = test_db().await;
    db.store
        .append(&stream("f"), ExpectedVersion::Any, events(5), &meta())
        .await
        .unwrap();
    assert!(catch_up(&*db.store, &db.pool, &FailsAt(4)).await.is_err());
    assert!(
        audit_rows(&db.pool).await.is_empty(),
        "events 1..3 were rolled back with the batch"
    );
    let cp = checkpoints(&db.pool).await.unwrap();
    assert!(cp.iter().all(|c| c.position == 0));
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 5);
    assert_eq!(audit_rows(&db.pool).await, vec![1, 2, 3, 4, 5]);
}
