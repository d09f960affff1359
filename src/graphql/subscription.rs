//! `Subscription` (ours, beyond the upstream contract): live feeds over WebSocket
//! (`graphql-transport-ws`) of a unit's state, its log lines and a node's values, as the MQTT
//! core commits them ([`crate::service::live`]).
//!
//! Access is checked when the subscription starts, with REST's rule for the same data (a
//! unit's state: who may read the unit; its log lines: its creator or the unit itself; a node's
//! values: who may read the node), and again whenever access rules change anywhere on the instance (the agent is
//! resolved again from its token, so a blocked user or a rotated unit token ends the feed). A
//! feed ends with an error message when access is lost, when the object is deleted, when the
//! caller's token expires, or when the subscriber reads too slowly and falls
//! [`live::CAPACITY`] events behind.

use async_graphql::futures_util::stream::BoxStream;
use async_graphql::futures_util::Stream;
use async_graphql::{Context, Error, Result, SimpleObject, Subscription};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::scalars::DateTime;
use super::types::{LogLevel, UnitLogType, UnitStateType};
use super::{instance, token, watcher_agent};
use crate::service::live::{self, LiveEvent};
use crate::service::{Agent, Instance};

/// A unit's state as it reported it.
#[derive(SimpleObject)]
pub struct UnitStateEventType {
    pub unit_uuid: Uuid,
    /// The state; null when the device's text was not a state object.
    pub unit_state: Option<UnitStateType>,
    /// The firmware version the device reported (`pu_commit_version`).
    pub current_commit_version: String,
    pub last_update_datetime: DateTime,
}

/// A node's value.
#[derive(SimpleObject)]
pub struct UnitNodeValueType {
    pub unit_node_uuid: Uuid,
    pub state: String,
    pub last_update_datetime: DateTime,
}

pub struct Subscription;

/// Subscriptions one WebSocket connection may hold at once.
pub const MAX_PER_CONNECTION: usize = 32;
/// How long a feed waits after an access change before it checks again, so a burst of
/// changes costs each watcher one check.
const RECHECK_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// What a feed watches, to check access with REST's rule for the same data.
#[derive(Clone, Copy)]
enum Target {
    /// A unit's state: who may read the unit (`GET /units/{uuid}`).
    Unit(Uuid),
    /// A unit's log lines: its creator or the unit itself (`GET /units/log_list`).
    UnitLogs(Uuid),
    /// A node's values: who may read the node (`GET /unit_nodes/{uuid}`).
    Node(Uuid),
}

async fn check(instance: &Instance, agent: &Agent, target: Target) -> crate::error::AppResult<()> {
    match target {
        Target::Unit(uuid) => instance.get_unit(agent, uuid).await.map(|_| ()),
        Target::UnitLogs(uuid) => instance
            .unit_for_creator_or_self(agent, uuid)
            .await
            .map(|_| ()),
        Target::Node(uuid) => instance.get_unit_node(agent, uuid).await.map(|_| ()),
    }
}

/// The subscriptions of one WebSocket connection (put in its data at `connection_init`).
#[derive(Clone, Default)]
pub struct ConnectionSlots(Arc<AtomicUsize>);

/// A taken slot, freed when the feed ends.
struct Slot(Option<Arc<AtomicUsize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn take_slot(ctx: &Context<'_>) -> Result<Slot> {
    let Some(ConnectionSlots(n)) = ctx.data_opt::<ConnectionSlots>() else {
        return Ok(Slot(None));
    };
    if n.fetch_add(1, Ordering::Relaxed) >= MAX_PER_CONNECTION {
        n.fetch_sub(1, Ordering::Relaxed);
        return Err(Error::new(format!(
            "A connection may hold at most {MAX_PER_CONNECTION} subscriptions"
        )));
    }
    Ok(Slot(Some(n.clone())))
}

/// The feed of `target`'s events, mapped by `pick` (which skips events it returns `None` for).
async fn feed<T: Send + 'static>(
    ctx: &Context<'_>,
    target: Target,
    key: Uuid,
    pick: impl Fn(LiveEvent) -> Option<T> + Send + 'static,
) -> Result<BoxStream<'static, Result<T>>> {
    let instance = instance(ctx).clone();
    let token = token(ctx);
    let slot = take_slot(ctx)?;
    // watching starts before the check, so an access change during the check is not missed
    let watch = instance.live.watch(key).ok_or_else(|| {
        Error::new(format!(
            "This instance serves {} live subscriptions already; try again later",
            live::MAX_WATCHERS
        ))
    })?;
    let agent = watcher_agent(&instance, token.as_deref()).await?;
    check(&instance, &agent, target).await?;
    instance.node.count(crate::observe::Channel::Graphql);
    // a feed ends with its token (user tokens expire; unit tokens do not)
    let expires = token.as_deref().and_then(|t| {
        let now = chrono::Utc::now().timestamp();
        let exp = instance.tokens.decode(t, now).ok()?.exp?;
        let left = std::time::Duration::from_secs(exp.saturating_sub(now).max(0) as u64);
        Some(tokio::time::Instant::now() + left)
    });
    let feed = Feed {
        instance,
        token,
        target,
        watch,
        expires,
        _slot: slot,
    };
    Ok(Box::pin(async_stream(feed, pick)))
}

/// What a running feed holds.
struct Feed {
    instance: Instance,
    token: Option<String>,
    target: Target,
    watch: live::Watch,
    expires: Option<tokio::time::Instant>,
    _slot: Slot,
}

/// The running feed: events until access is lost, the reader lags, or the instance stops.
fn async_stream<T: Send + 'static>(
    feed: Feed,
    pick: impl Fn(LiveEvent) -> Option<T> + Send + 'static,
) -> impl Stream<Item = Result<T>> {
    async_graphql::futures_util::stream::unfold(Some((feed, pick)), |state| async move {
        let (mut feed, pick) = state?;
        let expires = feed.expires;
        let expiry = async move {
            match expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let Feed {
            instance,
            token,
            target,
            watch,
            ..
        } = &mut feed;
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                // an access change is looked at before events that may have come after it
                biased;
                _ = &mut expiry => {
                    let e = Error::new("Subscription ended: the token expired");
                    return Some((Err(e), None));
                }
                changed = watch.access.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    tokio::time::sleep(RECHECK_DELAY).await;
                    watch.access.borrow_and_update();
                    let allowed = match watcher_agent(instance, token.as_deref()).await {
                        Ok(agent) => check(instance, &agent, *target).await.map_err(Error::from),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = allowed {
                        let e = Error::new(format!("Subscription ended: {}", e.message));
                        return Some((Err(e), None));
                    }
                }
                event = watch.events.recv() => match event {
                    Ok(event) => {
                        if let Some(item) = pick(event) {
                            return Some((Ok(item), Some((feed, pick))));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let e = Error::new(format!(
                            "Subscription ended: the client read too slowly and missed {missed} events"
                        ));
                        return Some((Err(e), None));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    })
}

#[Subscription]
impl Subscription {
    /// The unit's state each time its device reports one.
    async fn unit_state(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
    ) -> Result<BoxStream<'static, Result<UnitStateEventType>>> {
        feed(ctx, Target::Unit(uuid), uuid, |event| match event {
            LiveEvent::UnitState {
                unit,
                state,
                commit,
                at,
            } => Some(UnitStateEventType {
                unit_uuid: unit,
                unit_state: serde_json::from_str::<crate::service::units::UnitState>(&state)
                    .ok()
                    .map(Into::into),
                current_commit_version: commit.to_string(),
                last_update_datetime: DateTime(at.to_string()),
            }),
            _ => None,
        })
        .await
    }

    /// The unit's log lines as they are stored, of the given levels (default: all).
    async fn unit_logs(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        #[graphql(
            default_with = "vec![LogLevel::Debug, LogLevel::Info, LogLevel::Warning, LogLevel::Error, LogLevel::Critical]"
        )]
        level: Vec<LogLevel>,
    ) -> Result<BoxStream<'static, Result<UnitLogType>>> {
        let levels: Vec<crate::domain::LogLevel> = level.into_iter().map(Into::into).collect();
        feed(
            ctx,
            Target::UnitLogs(uuid),
            uuid,
            move |event| match event {
                LiveEvent::Log(line) if levels.contains(&line.level) => Some(UnitLogType {
                    uuid: line.uuid,
                    level: line.level.into(),
                    unit_uuid: line.unit_uuid,
                    text: line.text.clone(),
                    create_datetime: DateTime(line.create_datetime.clone()),
                    expiration_datetime: DateTime(line.expiration_datetime.clone()),
                }),
                _ => None,
            },
        )
        .await
    }

    /// The node's values as they are stored.
    async fn unit_node_value(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
    ) -> Result<BoxStream<'static, Result<UnitNodeValueType>>> {
        feed(ctx, Target::Node(uuid), uuid, |event| match event {
            LiveEvent::NodeValue { node, value, at } => Some(UnitNodeValueType {
                unit_node_uuid: node,
                state: value.to_string(),
                last_update_datetime: DateTime(at.to_string()),
            }),
            _ => None,
        })
        .await
    }
}
