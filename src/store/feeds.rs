//! The feed tables (migrations `*_feeds.sql`): the durable inbox of received messages and
//! their dead letters. A message is inserted before it is processed, under a lease, and
//! finished with its ACK; the duplicate key is unique, so a re-delivery finds the stored ACK
//! instead of processing again. Times are milliseconds since the Unix epoch, passed in.

use super::{StoreResult, map_err};
use async_trait::async_trait;
use sqlx::{Pool, Postgres, Sqlite};

/// A message as received.
#[derive(Debug, Clone)]
pub struct NewFeedMessage {
    pub channel: String,
    /// `MSH-3|MSH-4|MSH-10`, or `sha256:<hex>` when the header cannot be read.
    pub dup_key: String,
    pub sha256: String,
    pub raw: Vec<u8>,
}

/// What receiving a message found in the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// A new message, leased to the caller under this id.
    New(String),
    /// A message processed before: its stored ACK.
    Done { id: String, ack: String },
    /// Another delivery of it is being processed right now.
    Busy,
    /// A delivery whose processing never finished (its node died): leased to the caller.
    TakenOver(String),
}

/// How processing a message ended.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    /// `AA`, `AE` or `AR`.
    pub ack_code: &'a str,
    pub ack: &'a str,
    /// The dead-letter class and error when it failed.
    pub dead: Option<(&'a str, &'a str)>,
}

/// An inbox row as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedMessageRow {
    pub id: String,
    pub channel: String,
    pub dup_key: String,
    pub sha256: String,
    pub raw: Vec<u8>,
    pub received: i64,
    pub state: String,
    pub ack_code: Option<String>,
    pub ack: Option<String>,
}

/// A dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRow {
    pub message_id: String,
    pub channel: String,
    pub dup_key: String,
    pub class: String,
    pub error: String,
    pub created: i64,
    pub replays: i64,
    pub resolved: Option<i64>,
}

/// The inbox and its dead letters.
#[async_trait]
pub trait FeedStore: Send + Sync {
    /// Inserts the message, or finds the earlier delivery with the same duplicate key.
    async fn begin(&self, m: &NewFeedMessage, now: i64, lease_ms: i64) -> StoreResult<Begun>;
    /// Leases a stored message for a replay; false when it is being processed.
    async fn lease(&self, id: &str, now: i64, lease_ms: i64) -> StoreResult<bool>;
    /// Stores the outcome: the ACK, and a dead letter when it failed (a success resolves an
    /// earlier dead letter of the message).
    async fn finish(&self, id: &str, finish: &Finish<'_>, now: i64) -> StoreResult<()>;
    async fn message(&self, id: &str) -> StoreResult<Option<FeedMessageRow>>;
    /// The latest event time applied to each of `identities` (those never written are left
    /// out).
    async fn event_times(&self, identities: &[String]) -> StoreResult<Vec<(String, i64)>>;
    /// Records that `message_id` applied its event time to `identities` (a later time wins).
    async fn record_events(
        &self,
        identities: &[String],
        event_ms: i64,
        message_id: &str,
    ) -> StoreResult<()>;
    /// Dead letters, newest first; resolved ones only when asked.
    async fn dead_letters(
        &self,
        class: Option<&str>,
        resolved: bool,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetterRow>>;
}

pub(super) struct FeedSql<DB: sqlx::Database> {
    pub write: Pool<DB>,
    pub read: Pool<DB>,
}

type DeadTuple = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

macro_rules! feed_store_impl {
    ($db:ty) => {
        #[async_trait]
        impl FeedStore for FeedSql<$db> {
            async fn begin(
                &self,
                m: &NewFeedMessage,
                now: i64,
                lease_ms: i64,
            ) -> StoreResult<Begun> {
                let id = uuid::Uuid::now_v7().to_string();
                let inserted = sqlx::query::<$db>(
                    "INSERT INTO feed_message (id, channel, dup_key, sha256, raw, received, \
                     state, lease_until, updated) VALUES ($1, $2, $3, $4, $5, $6, \
                     'processing', $7, $6) ON CONFLICT (dup_key) DO NOTHING",
                )
                .bind(&id)
                .bind(&m.channel)
                .bind(&m.dup_key)
                .bind(&m.sha256)
                .bind(&m.raw)
                .bind(now)
                .bind(now + lease_ms)
                .execute(&self.write)
                .await
                .map_err(map_err)?
                .rows_affected();
                if inserted > 0 {
                    return Ok(Begun::New(id));
                }
                let row: Option<(String, String, Option<String>)> = sqlx::query_as::<$db, _>(
                    "SELECT id, state, ack FROM feed_message WHERE dup_key = $1",
                )
                .bind(&m.dup_key)
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                let Some((id, state, ack)) = row else {
                    return Ok(Begun::Busy);
                };
                if let (true, Some(ack)) = (state != "processing", ack) {
                    return Ok(Begun::Done { id, ack });
                }
                if self.lease(&id, now, lease_ms).await? {
                    Ok(Begun::TakenOver(id))
                } else {
                    Ok(Begun::Busy)
                }
            }

            async fn lease(&self, id: &str, now: i64, lease_ms: i64) -> StoreResult<bool> {
                let n = sqlx::query::<$db>(
                    "UPDATE feed_message SET state = 'processing', lease_until = $1, \
                     updated = $2 WHERE id = $3 AND (state <> 'processing' OR lease_until < $2)",
                )
                .bind(now + lease_ms)
                .bind(now)
                .bind(id)
                .execute(&self.write)
                .await
                .map_err(map_err)?
                .rows_affected();
                Ok(n > 0)
            }

            async fn finish(&self, id: &str, f: &Finish<'_>, now: i64) -> StoreResult<()> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                let state = if f.dead.is_some() {
                    "failed"
                } else {
                    "accepted"
                };
                sqlx::query::<$db>(
                    "UPDATE feed_message SET state = $1, lease_until = NULL, ack_code = $2, \
                     ack = $3, updated = $4 WHERE id = $5",
                )
                .bind(state)
                .bind(f.ack_code)
                .bind(f.ack)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                match f.dead {
                    Some((class, error)) => {
                        sqlx::query::<$db>(
                            "INSERT INTO feed_dead_letter (message_id, class, error, created) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO UPDATE SET \
                             class = excluded.class, error = excluded.error, \
                             replays = feed_dead_letter.replays + 1, resolved = NULL",
                        )
                        .bind(id)
                        .bind(class)
                        .bind(error)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    }
                    None => {
                        sqlx::query::<$db>(
                            "UPDATE feed_dead_letter SET resolved = $1, replays = replays + 1 \
                             WHERE message_id = $2 AND resolved IS NULL",
                        )
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    }
                }
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn event_times(
                &self,
                identities: &[String],
            ) -> StoreResult<Vec<(String, i64)>> {
                if identities.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT identity, event_ms FROM feed_event WHERE identity IN (",
                );
                let mut list = qb.separated(", ");
                for i in identities {
                    list.push_bind(i.clone());
                }
                qb.push(")");
                qb.build_query_as::<(String, i64)>()
                    .fetch_all(&self.write)
                    .await
                    .map_err(map_err)
            }

            async fn record_events(
                &self,
                identities: &[String],
                event_ms: i64,
                message_id: &str,
            ) -> StoreResult<()> {
                if identities.is_empty() {
                    return Ok(());
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO feed_event (identity, event_ms, message_id) ",
                );
                qb.push_values(identities, |mut b, i| {
                    b.push_bind(i.clone())
                        .push_bind(event_ms)
                        .push_bind(message_id.to_string());
                });
                qb.push(
                    " ON CONFLICT (identity) DO UPDATE SET event_ms = excluded.event_ms, \
                     message_id = excluded.message_id WHERE excluded.event_ms >= feed_event.event_ms",
                );
                qb.build().execute(&self.write).await.map_err(map_err)?;
                Ok(())
            }

            async fn message(&self, id: &str) -> StoreResult<Option<FeedMessageRow>> {
                type Row = (
                    String,
                    String,
                    String,
                    String,
                    Vec<u8>,
                    i64,
                    String,
                    Option<String>,
                    Option<String>,
                );
                let row: Option<Row> = sqlx::query_as::<$db, Row>(
                    "SELECT id, channel, dup_key, sha256, raw, received, state, ack_code, ack \
                     FROM feed_message WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.read)
                .await
                .map_err(map_err)?;
                Ok(row.map(|r| FeedMessageRow {
                    id: r.0,
                    channel: r.1,
                    dup_key: r.2,
                    sha256: r.3,
                    raw: r.4,
                    received: r.5,
                    state: r.6,
                    ack_code: r.7,
                    ack: r.8,
                }))
            }

            async fn dead_letters(
                &self,
                class: Option<&str>,
                resolved: bool,
                limit: u32,
            ) -> StoreResult<Vec<DeadLetterRow>> {
                let rows: Vec<DeadTuple> = sqlx::query_as::<$db, DeadTuple>(
                    "SELECT d.message_id, m.channel, m.dup_key, d.class, d.error, d.created, \
                     d.replays, d.resolved FROM feed_dead_letter d JOIN feed_message m \
                     ON m.id = d.message_id WHERE ($1 IS NULL OR d.class = $1) \
                     AND ($2 OR d.resolved IS NULL) ORDER BY d.created DESC, d.message_id \
                     LIMIT $3",
                )
                .bind(class)
                .bind(resolved)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| DeadLetterRow {
                        message_id: r.0,
                        channel: r.1,
                        dup_key: r.2,
                        class: r.3,
                        error: r.4,
                        created: r.5,
                        replays: r.6,
                        resolved: r.7,
                    })
                    .collect())
            }
        }
    };
}

feed_store_impl!(Sqlite);
feed_store_impl!(Postgres);
