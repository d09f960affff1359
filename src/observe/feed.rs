//! The process-wide feeds of a [`Node`]: a `tracing` layer that records every ERROR event in
//! the error tracker, and a panic hook that records the panic, alerts, and then calls the
//! previous hook.
//!
//! Both are process-global by nature, while trackers are per instance (tests run several
//! instances in one process). So the feed is installed once (by `pepeunit serve`, before the
//! instance exists) and the instance's [`Node`] is attached to it when it starts; until then, and
//! in processes that never attach (the integration tests), events pass through untouched. Paths
//! that must be tracked without this feed record into their own instance's `Node` explicitly
//! and mark their log event with a `tracked` field, which the layer skips.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::errors::normalize;
use super::Node;

#[derive(Clone, Default)]
pub struct ProcessFeed(Arc<OnceLock<Node>>);

impl ProcessFeed {
    /// The layer to add to the subscriber (it sees ERROR events only).
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        ErrorLayer(self.clone()).with_filter(LevelFilter::ERROR)
    }

    /// From now on, feeds `node` (the first attached node stays).
    pub fn attach(&self, node: Node) {
        let _ = self.0.set(node);
    }

    /// Records panics in the attached node, then runs the hook that was installed before.
    pub fn install_panic_hook(&self) {
        let previous = std::panic::take_hook();
        let feed = self.clone();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(node) = feed.0.get() {
                let place = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = super::panic_message(info.payload());
                node.panicked(&format!("panic{place}"), &message);
                // the panic unwinds on this thread: a supervising task that catches it
                // learns here that the alert is already out
                HOOK_REPORTED.with(|r| r.set(true));
            }
            previous(info)
        }));
    }
}

thread_local! {
    /// Set by the panic hook when it has reported a panic on this thread, taken by
    /// [`Node::supervise`](super::Node::supervise) when it catches one.
    static HOOK_REPORTED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the panic hook has reported the panic being caught on this thread (and clears it).
pub(crate) fn take_hook_reported() -> bool {
    HOOK_REPORTED.with(|r| r.replace(false))
}

struct ErrorLayer(ProcessFeed);

impl<S: Subscriber> Layer<S> for ErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(node) = self.0 .0.get() else { return };
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.tracked {
            return;
        }
        let kind = format!(
            "{}: {}",
            event.metadata().target(),
            normalize(&fields.message)
        );
        node.error(&kind, &fields.detail);
    }
}

/// The message and the other fields (`name=value`, space separated) of an event.
#[derive(Default)]
struct Fields {
    message: String,
    detail: String,
    tracked: bool,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &dyn std::fmt::Display) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "tracked" => self.tracked = true,
            name => {
                if !self.detail.is_empty() {
                    self.detail.push(' ');
                }
                self.detail.push_str(&format!("{name}={value}"));
            }
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, &format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn error_events_reach_the_attached_node_once() {
        let node = Node::new(Default::default(), std::time::Duration::from_secs(300));
        let feed = ProcessFeed::default();
        let subscriber = tracing_subscriber::registry().with(feed.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(peer = "a.example", "delivery to 10.0.0.1 failed");
            feed.attach(node.clone());
            tracing::warn!("not an error");
            tracing::error!(peer = "b.example", "delivery to 10.0.0.2 failed");
            tracing::error!(peer = "c.example", "delivery to 10.0.0.3 failed");
            tracing::error!(tracked = true, "recorded elsewhere");
        });
        let errors = node.errors(false, 0);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(
            e.kind,
            "pepeunit::observe::feed::tests: delivery to # failed"
        );
        assert_eq!(e.count, 2);
        assert_eq!(e.last_detail, "peer=c.example");
    }

    #[tokio::test]
    async fn a_supervised_panic_is_one_alert_when_the_hook_reports_it() {
        let node = Node::new(Default::default(), std::time::Duration::from_secs(300));
        let feed = ProcessFeed::default();
        feed.attach(node.clone());
        // process-global: other tests' panics reach this node too, hence the unique text
        feed.install_panic_hook();
        let task = tokio::spawn(
            node.clone()
                .supervise("hooked", async { panic!("hooked-boom-7f3a") }),
        );
        assert!(task.await.unwrap_err().is_panic());
        let mut rx = node.admin_alerts();
        let mut ours = Vec::new();
        while let Ok(a) = rx.try_recv() {
            if a.text.contains("hooked-boom-7f3a") {
                ours.push(a);
            }
        }
        assert_eq!(ours.len(), 1, "{ours:?}");
        assert!(
            ours[0].kind.starts_with("panic at src/observe/feed.rs:"),
            "{:?}",
            ours[0]
        );
        let errors = node.errors(false, 0);
        let task = errors.iter().find(|e| e.kind == "task hooked panicked");
        assert_eq!(task.map(|e| e.count), Some(1), "{errors:?}");
        assert!(!take_hook_reported(), "the flag was taken by supervise");
    }
}
