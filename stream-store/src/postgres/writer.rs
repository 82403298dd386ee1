//! The writer task: drains waiting appends into one transaction (group commit) and announces
//! what committed.

use super::*;

/// The writer's own session: appends never wait for a pool connection, nor pay the pool's
/// liveness check, and a broken session is replaced on the next batch.
struct WriterSession {
    pool: PgPool,
    conn: Option<PgConnection>,
}

impl WriterSession {
    async fn append(&mut self, requests: &[WriteRequest]) -> Result<(Answers, i64), sqlx::Error> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            empty => {
                let conn = self.pool.acquire().await?.detach();
                empty.insert(conn)
            }
        };
        let result = append_batch(conn, requests).await;
        if let Err(e) = &result {
            if !matches!(e, sqlx::Error::Database(_)) {
                // The session may be broken (server restarted, network): start a new one.
                self.conn = None;
            }
        }
        result
    }
}

/// Hands the events of committed appends to the tail, then announces the new head: a
/// subscriber woken by the head finds them there. Other processes hear of it from the
/// announcer (`committed`).
fn publish<'a>(
    tail: &Tail,
    (head, committed): &Heads,
    results: impl IntoIterator<Item = &'a Result<AppendOutcome, StoreError>>,
    last: i64,
) {
    let events = results
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|o| !o.duplicate)
        .flat_map(|o| o.events.iter().cloned().map(Arc::new))
        .collect();
    tail.committed(events);
    head.send_if_modified(|h| std::mem::replace(h, (*h).max(last)) < last);
    committed.send_if_modified(|h| std::mem::replace(h, (*h).max(last)) < last);
}

/// This process's head (what its subscribers follow) and the last position its writer
/// committed (what the announcer tells other processes).
type Heads = (Arc<watch::Sender<i64>>, watch::Sender<i64>);

/// NOTIFYs every other process of this process's committed appends, after their commit and in
/// a transaction of its own (see migrations/0009: inside the append it made every notifying
/// commit wait for the others' WAL flush). Announcements coalesce: while one is sent, later
/// commits only raise the position the next one carries. A notification lost to a crash right
/// after a commit is made up for by the listeners, which re-read the head when they have heard
/// nothing for `POLL_FALLBACK`.
pub(super) async fn run_announcer(pool: PgPool, mut committed: watch::Receiver<i64>) {
    while committed.changed().await.is_ok() {
        let last = committed.borrow_and_update().to_string();
        let sent = sqlx::query!("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, last)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not announce appended events");
        }
    }
}

/// One answer per write request: its results, up to and including the first failure.
type Answers = Vec<Vec<Result<AppendOutcome, StoreError>>>;

pub(super) async fn run_writer(
    pool: PgPool,
    mut requests: mpsc::Receiver<WriteRequest>,
    heads: Heads,
    tail: Arc<Tail>,
) {
    let mut session = WriterSession { pool, conn: None };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = std::time::Instant::now();
        let outcome = session.append(&batch).await;
        tracing::debug!(
            requests = batch.len(),
            micros = started.elapsed().as_micros() as u64,
            "append batch"
        );
        match outcome {
            Ok((answers, last)) => {
                publish(&tail, &heads, answers.iter().flatten(), last);
                for (request, answer) in batch.drain(..).zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            // One request may have poisoned the whole transaction: retry each on its own (a
            // chain stays whole) so the others are not failed for it.
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, requests = batch.len(), "append batch failed; retrying one by one");
                tail.clear();
                for request in batch.drain(..) {
                    let answer = match session.append(std::slice::from_ref(&request)).await {
                        Ok((mut answers, last)) => {
                            publish(&tail, &heads, answers.iter().flatten(), last);
                            answers.pop().unwrap_or_default()
                        }
                        Err(e) => {
                            tail.clear();
                            vec![Err(classify(e))]
                        }
                    };
                    let _ = request.reply.send(answer);
                }
            }
            Err(e) => {
                // The batch may have committed all the same: its events are not known here.
                tail.clear();
                // One request (the arm above takes larger batches), answered as each request
                // of a retried batch is: a refusal by the database stays Invalid.
                if let Some(request) = batch.pop() {
                    let _ = request.reply.send(vec![Err(classify(e))]);
                }
            }
        }
    }
}

fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("events_event_id_key") => {
            StoreError::Invalid("an event id in this append already exists".into())
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22P05") => {
            StoreError::Invalid("event data contains characters PostgreSQL cannot store".into())
        }
        _ => StoreError::from(e),
    }
}

/// Appends every request of the batch in one statement, `ledger_append` (migrations/0004,
/// 0011, 0014): one round trip and one commit for the whole batch. Returns one answer per
/// request and the last position written (0 if none).
async fn append_batch(
    conn: &mut PgConnection,
    requests: &[WriteRequest],
) -> Result<(Answers, i64), sqlx::Error> {
    let mut j = JobColumns::default();
    let mut e = EventColumns::default();
    let jobs: Vec<&AppendJob> = requests.iter().flat_map(|r| &r.chain).collect();
    for request in requests {
        // Each append of a chain after the first requires the one before it (1-based).
        let first = i32::try_from(j.stream.len() + 1).unwrap_or(i32::MAX);
        for (k, job) in (0..).zip(&request.chain) {
            j.after.push((k > 0).then(|| first + k - 1));
            j.push(job);
        }
    }
    for (index, job) in (1..).zip(&jobs) {
        for (offset, event) in (1..).zip(&job.events) {
            e.job.push(index);
            e.offset.push(offset);
            e.event_id.push(event.event_id);
            e.event_type.push(&event.event_type);
            e.schema_version.push(event.schema_version);
            e.data.push(event.data.raw().get());
        }
    }
    let rows = sqlx::query!(
        r#"SELECT job AS "job!", status AS "status!", version, last_position
           FROM ledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                              $16::text[]::json[])"#,
        &j.stream as &[&str],
        &j.expected as &[Option<i64>],
        &j.count,
        &j.command_id,
        &j.correlation_id,
        &j.causation_id,
        &j.actor_id as &[&str],
        &j.actor_role as &[&str],
        &j.recorded_at,
        &j.after as &[Option<i32>],
        &e.job,
        &e.offset,
        &e.event_id,
        &e.event_type as &[&str],
        &e.schema_version,
        &e.data as &[&str],
    )
    .fetch_all(&mut *conn)
    .await?;

    // One result per job; None for a job skipped because the one it required failed.
    let mut results: Vec<Option<Result<AppendOutcome, StoreError>>> =
        Vec::with_capacity(jobs.len());
    let mut last_written = 0;
    for (job, row) in jobs.iter().zip(rows) {
        let result = match (row.status.as_str(), row.version, row.last_position) {
            ("skipped", _, _) => {
                results.push(None);
                continue;
            }
            ("appended", Some(version), Some(last)) => {
                last_written = last_written.max(last);
                Ok(recorded(job, version, last))
            }
            ("conflict", Some(actual), _) => Err(StoreError::Conflict {
                stream: job.stream.clone(),
                expected: job.expected,
                actual,
            }),
            ("reused", _, _) => Err(StoreError::CommandReused {
                command_id: job.meta.command_id,
            }),
            ("duplicate", _, _) => {
                // A job earlier in this batch, or a command recorded before.
                let earlier = jobs.iter().zip(&results).find_map(|(other, r)| match r {
                    Some(Ok(o)) if other.meta.command_id == job.meta.command_id && !o.duplicate => {
                        Some(o.clone())
                    }
                    _ => None,
                });
                match earlier {
                    Some(o) => Ok(AppendOutcome {
                        duplicate: true,
                        ..o
                    }),
                    None => find_command(&mut *conn, job.meta.command_id)
                        .await?
                        .ok_or_else(|| StoreError::Invalid("a duplicate without events".into())),
                }
            }
            (status, _, _) => Err(StoreError::Invalid(format!(
                "ledger_append answered {status:?}"
            ))),
        };
        results.push(Some(result));
    }
    let mut results = results.into_iter();
    let answers = requests
        .iter()
        .map(|request| {
            let mut answer = Vec::with_capacity(request.chain.len());
            for result in results.by_ref().take(request.chain.len()) {
                if answer.last().is_some_and(Result::is_err) {
                    continue; // past the chain's first failure: skipped
                }
                answer.push(result.unwrap_or_else(|| {
                    Err(StoreError::Invalid(
                        "ledger_append skipped an append whose predecessor succeeded".into(),
                    ))
                }));
            }
            answer
        })
        .collect();
    Ok((answers, last_written))
}

/// The events of an appended job, as `ledger_append` numbered them.
fn recorded(job: &AppendJob, version: i64, last: i64) -> AppendOutcome {
    let n = job.events.len() as i64;
    let events: Vec<RecordedEvent> = (1..)
        .zip(&job.events)
        .map(|(k, event)| RecordedEvent {
            position: last - n + k,
            stream_id: job.stream.clone(),
            version: version - n + k,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            data: event.data.clone(),
            command_id: job.meta.command_id,
            correlation_id: job.meta.correlation_id,
            causation_id: job.meta.causation_id,
            actor: job.meta.actor.clone(),
            // PostgreSQL keeps microseconds: answer with what a later read returns.
            recorded_at: job.meta.recorded_at.trunc_subsecs(6),
        })
        .collect();
    AppendOutcome {
        stream_id: job.stream.clone(),
        version,
        position: last,
        duplicate: false,
        events,
    }
}

pub(super) async fn find_command(
    db: impl sqlx::PgExecutor<'_>,
    command_id: Uuid,
) -> Result<Option<AppendOutcome>, sqlx::Error> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT position, stream_id, version, event_id, event_type, schema_version,
                    data AS "data: Json<Payload>",
                command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
         FROM events WHERE command_id = $1 ORDER BY position"#,
        command_id
    )
    .fetch_all(db)
    .await?;
    Ok(outcome(
        rows.into_iter().map(RecordedEvent::from).collect(),
        true,
    ))
}

/// The jobs of one batch, column by column.
#[derive(Default)]
struct JobColumns<'a> {
    stream: Vec<&'a str>,
    /// The job (1-based) that must have been appended, or be a duplicate, for this one to be.
    after: Vec<Option<i32>>,
    expected: Vec<Option<i64>>,
    count: Vec<i32>,
    command_id: Vec<Uuid>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Uuid>,
    actor_id: Vec<&'a str>,
    actor_role: Vec<&'a str>,
    recorded_at: Vec<DateTime<Utc>>,
}

impl<'a> JobColumns<'a> {
    fn push(&mut self, job: &'a AppendJob) {
        self.stream.push(job.stream.as_str());
        self.expected.push(match job.expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
        });
        self.count
            .push(i32::try_from(job.events.len()).unwrap_or(i32::MAX));
        self.command_id.push(job.meta.command_id);
        self.correlation_id.push(job.meta.correlation_id);
        self.causation_id.push(job.meta.causation_id);
        self.actor_id.push(&job.meta.actor.id);
        self.actor_role.push(&job.meta.actor.role);
        self.recorded_at.push(job.meta.recorded_at);
    }
}

/// The events of one batch, column by column; `job` and `offset` are 1-based.
#[derive(Default)]
struct EventColumns<'a> {
    job: Vec<i32>,
    offset: Vec<i32>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i32>,
    /// JSON text, cast to `json` in the statement (migrations/0014).
    data: Vec<&'a str>,
}
