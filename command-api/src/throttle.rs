//! Password checks slowed for the attacker, not the owner: failures are counted in PostgreSQL
//! (so every process shares them) per key, and an attempt is reserved as a failure before the
//! password is verified (so concurrent guesses cannot all slip past the limit). Past a key's
//! free attempts each further failure doubles a delay (2 s, 4 s, … at most 15 min) during
//! which that key's attempts are refused with `Retry-After`. Keys: the account at one address
//! (the owner typing at their own desk is only ever slowed by their own typos), the account
//! from anywhere and the address for any account (both with more room, against distributed
//! guessing and password spraying).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{Connection, PgPool};
use tokio::sync::Semaphore;

use crate::ApiError;

/// Counting starts over after this long without a failure.
const WINDOW_SECONDS: f64 = 15.0 * 60.0;
/// The longest delay.
const MAX_DELAY_SECONDS: f64 = 15.0 * 60.0;
/// Passwords hashed or verified at once in this process (argon2id takes ~19 MiB and a core's
/// worth of work each).
const HASHES_AT_ONCE: usize = 2;
/// Longest a password check waits for its turn before the answer is 503.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// What is counted, and how many failures it may have before delays begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub free: i32,
}

impl Key {
    /// One account signed into from one address.
    pub fn pair(account: &str, address: &str) -> Key {
        Key {
            name: format!("pair:{account}|{address}"),
            free: 5,
        }
    }
    /// One account from anywhere.
    pub fn account(account: &str) -> Key {
        Key {
            name: format!("account:{account}"),
            free: 20,
        }
    }
    /// The current-password check of one user's `ChangePassword`.
    pub fn password_change(user: &str) -> Key {
        Key {
            name: format!("password-change:{user}"),
            free: 5,
        }
    }
    /// One address, whatever the account.
    pub fn address(address: &str) -> Key {
        Key {
            name: format!("address:{address}"),
            free: 50,
        }
    }
}

/// Failures of password checks, shared by every process through the database.
#[derive(Clone)]
pub struct Throttle {
    pool: PgPool,
}

impl Throttle {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Reserves one attempt under every key, as a failure, in one transaction (rows locked in
    /// name order): refused with `TOO_MANY_ATTEMPTS` and the wait while a key is in its delay
    /// (nothing is counted then). An attempt that uses up a key's free failures starts a delay
    /// for the attempts after it; once a delay has passed, the next attempt is checked again
    /// (a success then ends it), so no one is ever locked out for good.
    pub async fn reserve(&self, keys: &[Key]) -> Result<(), ApiError> {
        let mut keys = keys.to_vec();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let mut counts = Vec::with_capacity(keys.len());
        let mut blocked: f64 = 0.0;
        for key in &keys {
            let row = sqlx::query!(
                r#"INSERT INTO sign_in_failures AS f (key, failures, last_at)
                   VALUES ($1, 0, now())
                   ON CONFLICT (key) DO UPDATE SET key = f.key
                   RETURNING failures,
                             EXTRACT(EPOCH FROM now() - last_at)::float8 AS "idle!",
                             COALESCE(EXTRACT(EPOCH FROM blocked_until - now()), 0)::float8
                                 AS "blocked_for!""#,
                &key.name
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            blocked = blocked.max(row.blocked_for);
            counts.push(if row.idle > WINDOW_SECONDS {
                0
            } else {
                row.failures
            });
        }
        if blocked > 0.0 {
            // Rolled back: a refused attempt counts under no key.
            return Err(too_many(blocked));
        }
        for (key, before) in keys.iter().zip(counts) {
            // This attempt is checked; if it turns out a failure that uses up the key's free
            // ones, the next attempts wait (the delay doubling with each such failure).
            let failures = before + 1;
            let delay = (failures >= key.free).then(|| {
                2f64.powi((failures - key.free + 1).min(20))
                    .min(MAX_DELAY_SECONDS)
            });
            sqlx::query!(
                "UPDATE sign_in_failures
                    SET failures = $2, last_at = now(),
                        blocked_until = CASE WHEN $3::float8 > 0
                                             THEN now() + make_interval(secs => $3::float8) END
                  WHERE key = $1",
                &key.name,
                failures,
                delay.unwrap_or(0.0)
            )
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        self.forget_idle().await;
        Ok(())
    }

    /// Every so many attempts, deletes the rows idle past the window (attackers choose keys:
    /// the table must not grow with them).
    async fn forget_idle(&self) {
        static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
        if ATTEMPTS.fetch_add(1, Ordering::Relaxed) % 64 != 0 {
            return;
        }
        let forgotten = sqlx::query!(
            "DELETE FROM sign_in_failures
              WHERE last_at < now() - make_interval(secs => $1)
                AND (blocked_until IS NULL OR blocked_until < now())",
            WINDOW_SECONDS
        )
        .execute(&self.pool)
        .await;
        if let Err(e) = forgotten {
            tracing::warn!(error = %e, "could not forget idle sign-in failures");
        }
    }

    /// The password was right: `reset` keys start over (the account at its address), and the
    /// attempt reserved under the others is given back.
    pub async fn succeeded(&self, reset: &[Key], give_back: &[Key]) -> Result<(), ApiError> {
        let reset: Vec<&str> = reset.iter().map(|k| k.name.as_str()).collect();
        let give_back: Vec<&str> = give_back.iter().map(|k| k.name.as_str()).collect();
        sqlx::query!(
            "DELETE FROM sign_in_failures WHERE key = ANY($1)",
            &reset as &[&str]
        )
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        sqlx::query!(
            "UPDATE sign_in_failures SET failures = GREATEST(failures - 1, 0)
              WHERE key = ANY($1) AND (blocked_until IS NULL OR blocked_until <= now())",
            &give_back as &[&str]
        )
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

fn too_many(seconds: f64) -> ApiError {
    ApiError::TooManyAttempts {
        retry_after: seconds.ceil().max(1.0) as u64,
    }
}

fn unavailable(e: sqlx::Error) -> ApiError {
    ApiError::Unavailable(stream_store::StoreError::Unavailable(
        format!("sign-in counters: {e}").into(),
    ))
}

/// Runs a password hash or check when its turn comes: at most `HASHES_AT_ONCE` at a time in
/// this process, so a burst of sign-ins queues instead of taking ~19 MiB each at once; past
/// `HASH_QUEUE_WAIT` in the queue the answer is 503 with `Retry-After`.
pub(crate) async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    let turns = TURNS.get_or_init(|| Semaphore::new(HASHES_AT_ONCE));
    let _turn = tokio::time::timeout(HASH_QUEUE_WAIT, turns.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn busy() -> ApiError {
    ApiError::Unavailable(stream_store::StoreError::Unavailable(
        "too many password checks at once; retry shortly".into(),
    ))
}
