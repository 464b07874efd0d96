//! The subscription tables (migrations `*_subscriptions.sql`): the dispatcher's position in
//! the change feed, the outbox of notifications owed to each Subscription (in change-feed
//! order), and one delivery lease per Subscription so its notifications go out one at a
//! time, in order. Times are milliseconds since the Unix epoch, passed in.

use super::{StoreResult, map_err};
use async_trait::async_trait;
use sqlx::{Pool, Postgres, Sqlite};

/// A version owed to a Subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    pub subscription: String,
    /// The version's change-feed position.
    pub seq: i64,
    pub resource_type: String,
    pub resource_id: String,
    pub version: i64,
}

#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// How far the change feed has been matched (0: nothing yet).
    async fn position(&self) -> StoreResult<i64>;
    /// Records `events` and moves the position to `to` (never backwards), in one
    /// transaction; events recorded already are left as they are.
    async fn advance(&self, to: i64, events: &[SubscriptionEvent], now: i64) -> StoreResult<()>;
    /// The first `limit` notifications owed to `subscription`, oldest first.
    async fn pending(&self, subscription: &str, limit: u32) -> StoreResult<Vec<SubscriptionEvent>>;
    /// Every Subscription owed something, with its oldest position.
    async fn owed(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Drops everything owed to a Subscription (deleted or switched off).
    async fn forget(&self, subscription: &str) -> StoreResult<()>;
    /// Takes the delivery lease of `subscription` for `owner` until `until`: free, expired,
    /// or `owner`'s already. False when someone else holds it.
    async fn lease(
        &self,
        subscription: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<bool>;
    /// Ends a delivery in one transaction: removes the notifications it had acknowledged,
    /// counts them sent, and gives the lease back recording whether it failed; the
    /// consecutive failures after it.
    async fn finish(
        &self,
        subscription: &str,
        owner: &str,
        seqs: &[i64],
        failed: bool,
    ) -> StoreResult<i64>;
    /// The Subscriptions whose last delivery attempt failed (their own job retries them).
    async fn failing(&self) -> StoreResult<Vec<String>>;
    /// Notifications sent so far (for `eventsSinceSubscriptionStart`).
    async fn sent_count(&self, subscription: &str) -> StoreResult<i64>;
}

pub(super) struct SubscriptionSql<DB: sqlx::Database> {
    pub write: Pool<DB>,
    pub read: Pool<DB>,
}

macro_rules! subscription_store_impl {
    ($db:ty) => {
        #[async_trait]
        impl SubscriptionStore for SubscriptionSql<$db> {
            async fn position(&self) -> StoreResult<i64> {
                let row: Option<(i64,)> = sqlx::query_as::<$db, _>(
                    "SELECT position FROM subscription_cursor WHERE name = 'dispatch'",
                )
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?;
                Ok(row.map_or(0, |r| r.0))
            }

            async fn advance(
                &self,
                to: i64,
                events: &[SubscriptionEvent],
                now: i64,
            ) -> StoreResult<()> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                for e in events {
                    sqlx::query::<$db>(
                        "INSERT INTO subscription_event (subscription, seq, resource_type, \
                         resource_id, version, created) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (subscription, seq) DO NOTHING",
                    )
                    .bind(&e.subscription)
                    .bind(e.seq)
                    .bind(&e.resource_type)
                    .bind(&e.resource_id)
                    .bind(e.version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                sqlx::query::<$db>(
                    "INSERT INTO subscription_cursor (name, position) VALUES ('dispatch', $1) \
                     ON CONFLICT (name) DO UPDATE SET position = excluded.position \
                     WHERE subscription_cursor.position < excluded.position",
                )
                .bind(to)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }

            async fn pending(
                &self,
                subscription: &str,
                limit: u32,
            ) -> StoreResult<Vec<SubscriptionEvent>> {
                let rows: Vec<(String, i64, String, String, i64)> = sqlx::query_as::<$db, _>(
                    "SELECT subscription, seq, resource_type, resource_id, version \
                     FROM subscription_event WHERE subscription = $1 ORDER BY seq LIMIT $2",
                )
                .bind(subscription)
                .bind(i64::from(limit))
                .fetch_all(&self.write)
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(subscription, seq, resource_type, resource_id, version)| {
                            SubscriptionEvent {
                                subscription,
                                seq,
                                resource_type,
                                resource_id,
                                version,
                            }
                        },
                    )
                    .collect())
            }

            async fn owed(&self) -> StoreResult<Vec<(String, i64)>> {
                sqlx::query_as::<$db, (String, i64)>(
                    "SELECT subscription, MIN(seq) FROM subscription_event \
                     GROUP BY subscription ORDER BY subscription",
                )
                .fetch_all(&self.write)
                .await
                .map_err(map_err)
            }

            async fn forget(&self, subscription: &str) -> StoreResult<()> {
                sqlx::query::<$db>("DELETE FROM subscription_event WHERE subscription = $1")
                    .bind(subscription)
                    .execute(&self.write)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn lease(
                &self,
                subscription: &str,
                owner: &str,
                now: i64,
                until: i64,
            ) -> StoreResult<bool> {
                let n = sqlx::query::<$db>(
                    "INSERT INTO subscription_delivery (subscription, lease_owner, lease_until) \
                     VALUES ($1, $2, $3) ON CONFLICT (subscription) DO UPDATE SET \
                     lease_owner = excluded.lease_owner, lease_until = excluded.lease_until \
                     WHERE subscription_delivery.lease_until < $4 \
                     OR subscription_delivery.lease_owner = excluded.lease_owner",
                )
                .bind(subscription)
                .bind(owner)
                .bind(until)
                .bind(now)
                .execute(&self.write)
                .await
                .map_err(map_err)?
                .rows_affected();
                Ok(n > 0)
            }

            async fn finish(
                &self,
                subscription: &str,
                owner: &str,
                seqs: &[i64],
                failed: bool,
            ) -> StoreResult<i64> {
                let mut tx = self.write.begin().await.map_err(map_err)?;
                for seq in seqs {
                    sqlx::query::<$db>(
                        "DELETE FROM subscription_event WHERE subscription = $1 AND seq = $2",
                    )
                    .bind(subscription)
                    .bind(*seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                let n = i64::try_from(seqs.len()).unwrap_or(i64::MAX);
                let row: Option<(i64,)> = sqlx::query_as::<$db, _>(
                    "UPDATE subscription_delivery SET lease_owner = NULL, lease_until = 0, \
                     sent = sent + $1, failures = CASE WHEN $2 THEN failures + 1 ELSE 0 END \
                     WHERE subscription = $3 AND lease_owner = $4 RETURNING failures",
                )
                .bind(n)
                .bind(failed)
                .bind(subscription)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(row.map_or(0, |r| r.0))
            }

            async fn failing(&self) -> StoreResult<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as::<$db, _>(
                    "SELECT subscription FROM subscription_delivery WHERE failures > 0",
                )
                .fetch_all(&self.write)
                .await
                .map_err(map_err)?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn sent_count(&self, subscription: &str) -> StoreResult<i64> {
                let row: Option<(i64,)> = sqlx::query_as::<$db, _>(
                    "SELECT sent FROM subscription_delivery WHERE subscription = $1",
                )
                .bind(subscription)
                .fetch_optional(&self.read)
                .await
                .map_err(map_err)?;
                Ok(row.map_or(0, |r| r.0))
            }
        }
    };
}

subscription_store_impl!(Sqlite);
subscription_store_impl!(Postgres);
