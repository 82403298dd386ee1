//! Following the log: subscriptions page through it, woken by the writers' announcements
//! (a lost one is made up for by polling).

use super::*;

pub(super) struct Subscription {
    pub(super) store: PgEventStore,
    pub(super) after: i64,
    pub(super) buffer: VecDeque<RecordedEvent>,
    pub(super) head: watch::Receiver<i64>,
    /// The last read came back short: it reached the head as it was when the read began, so
    /// there is nothing more to read until the head moves.
    pub(super) drained: bool,
}

/// Events per read of a subscription.
pub const SUBSCRIPTION_PAGE: usize = 512;

impl Subscription {
    pub(super) async fn next(mut self) -> Option<(Result<RecordedEvent, StoreError>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Some((Ok(event), self));
            }
            let mut heard = true;
            if std::mem::take(&mut self.drained) {
                heard = self.wait_for_head().await;
            }
            // Mark the head as seen *before* reading: a commit after the read changes it again.
            self.head.borrow_and_update();
            // Nothing heard for a while: ask the table itself, should an announcement be lost.
            let read = if heard {
                self.store.read_all(self.after, SUBSCRIPTION_PAGE).await
            } else {
                self.store
                    .read_all_from_table(self.after, SUBSCRIPTION_PAGE)
                    .await
            };
            match read {
                Ok(events) if !events.is_empty() => {
                    self.drained = events.len() < SUBSCRIPTION_PAGE;
                    self.buffer.extend(events);
                }
                Ok(_) => self.drained = true,
                Err(e) => {
                    tokio::time::sleep(POLL_FALLBACK).await;
                    return Some((Err(e), self));
                }
            }
        }
    }

    /// Until the head moves past what was seen (true), or `POLL_FALLBACK` passed without a
    /// word (false).
    async fn wait_for_head(&mut self) -> bool {
        match tokio::time::timeout(POLL_FALLBACK, self.head.changed()).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                tokio::time::sleep(POLL_FALLBACK).await;
                false
            }
            Err(_) => false,
        }
    }
}

/// Follows NOTIFY on the events channel: publishes the newest head position and tells the
/// stream cache which streams changed. When the connection drops, notifications may have been
/// lost: the cache is emptied and subscribers are woken to re-read.
pub(super) async fn run_listener(
    pool: PgPool,
    head: Arc<watch::Sender<i64>>,
    cache: Arc<StreamCache>,
    tail: Arc<Tail>,
) {
    while !pool.is_closed() {
        cache.reset(None);
        if let Err(e) = follow_log(&pool, &head, &cache, &tail).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "event listener lost its connection");
        }
        cache.reset(None);
        head.send_modify(|_| {});
        tokio::time::sleep(POLL_FALLBACK).await;
    }
}

/// The last position in the log (0 when empty).
pub(super) async fn log_head<'c>(conn: impl sqlx::PgExecutor<'c>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT COALESCE(MAX(position), 0) AS "head!" FROM events"#)
        .fetch_one(conn)
        .await
}

async fn follow_log(
    pool: &PgPool,
    head: &watch::Sender<i64>,
    cache: &StreamCache,
    tail: &Tail,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    // Listening already: every later append is announced, everything before is in the head.
    let now = log_head(&mut listener).await?;
    cache.reset(Some(now));
    head.send_modify(|h| *h = (*h).max(now));
    loop {
        let p = match tokio::time::timeout(POLL_FALLBACK, listener.try_recv()).await {
            Ok(Ok(Some(n))) => match n.payload().parse::<i64>() {
                Ok(p) => p,
                Err(_) => continue,
            },
            // The connection was lost: notifications may have been missed.
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            // Quiet: a writer that died between its commit and its announcement is heard of here.
            // Asked on a pooled connection: the listener's own was cut off mid-receive, and
            // sqlx does not promise that a query on it then finds the protocol where it expects.
            Err(_) => log_head(pool).await?,
        };
        if let Some(from) = cache.mark().filter(|from| *from < p) {
            // This process's own batches are known without asking.
            if let Some(changes) = tail.changes(from, p) {
                cache.changed(&changes, p);
                head.send_if_modified(|h| std::mem::replace(h, (*h).max(p)) < p);
                continue;
            }
            let changes = sqlx::query!(
                r#"SELECT stream_id, MAX(version) AS "version!" FROM events
                   WHERE position > $1 AND position <= $2 GROUP BY stream_id"#,
                from,
                p
            )
            .fetch_all(&mut listener)
            .await?;
            let changes: Vec<(String, i64)> = changes
                .into_iter()
                .map(|r| (r.stream_id, r.version))
                .collect();
            cache.changed(&changes, p);
        }
        head.send_if_modified(|h| std::mem::replace(h, (*h).max(p)) < p);
    }
}
