//! Starting and stopping a whole instance: storage, the HTTP server and the owned tasks.
//! `pepeunit serve` and the integration tests go through the same code.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::service::Instance;

/// A started instance; `stop` shuts it down gracefully.
pub struct RunningInstance {
    pub addr: SocketAddr,
    pub instance: Instance,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    poller: JoinHandle<()>,
    /// Federation's change publisher and delivery worker, and the node state sampler.
    federation: Vec<JoinHandle<()>>,
    /// The alert pipeline and the Telegram bot.
    telegram: Vec<JoinHandle<()>>,
    /// Stops the alert task, after the MQTT core has drained (its last lines may be alerts).
    alerts_stop: watch::Sender<bool>,
    mqtt: crate::mqtt::MqttCore,
}

impl RunningInstance {
    /// Opens storage, binds `config.http_bind` (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<RunningInstance> {
        let listener = TcpListener::bind(config.http_bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http_bind))?;
        Self::start_on(config, listener).await
    }

    pub async fn start_on(
        config: Config,
        listener: TcpListener,
    ) -> anyhow::Result<RunningInstance> {
        let addr = listener.local_addr()?;
        let mut config = config;
        // bound first: with `PU_MQTT_BIND` port 0 the config learns the port the broker took
        let broker_listener = match config.mqtt_mode {
            crate::config::MqttMode::Embedded => Some(crate::mqtt::broker::bind(&mut config)?),
            crate::config::MqttMode::External => None,
        };
        let mut instance = Instance::open(config).await?;
        // before the HTTP server or the poller can start one
        let interrupted_syncs = instance.end_interrupted_syncs().await?;
        // the chat bot is a front door: the service layer knows it only as its port
        let telegram = crate::telegram::Telegram::new(&instance.config);
        instance.chat_bot = telegram
            .clone()
            .map(|t| std::sync::Arc::new(t) as std::sync::Arc<dyn crate::service::ports::ChatBot>);
        let mqtt = crate::mqtt::MqttCore::start(instance.clone(), broker_listener).await?;
        let (stop, stop_rx) = watch::channel(false);
        let mut http_stop = stop_rx.clone();
        // owned tasks run under the node's supervision: a panic becomes a crash alert
        let node = &instance.node;
        let graphql = crate::graphql::router(instance.clone());
        let http = tokio::spawn(node.clone().supervise(
            "http",
            crate::http::serve(instance.clone(), graphql, listener, async move {
                let _ = http_stop.changed().await;
            }),
        ));
        let fed = instance.federation.clone();
        let federation = vec![
            tokio::spawn(node.clone().supervise(
                "federation changes",
                fed.clone().run_changes(stop_rx.clone()),
            )),
            tokio::spawn(
                node.clone()
                    .supervise("federation deliveries", fed.run_deliveries(stop_rx.clone())),
            ),
            // outgoing Unit moves (service::moves)
            tokio::spawn(
                node.clone()
                    .supervise("moves", instance.clone().run_moves(stop_rx.clone())),
            ),
            tokio::spawn(node.clone().run_sampler(stop_rx.clone())),
        ];
        let (alerts_stop, alerts_stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(node.clone().supervise(
            "alerts",
            crate::service::alerts::run_alerts(instance.clone(), alerts_stop_rx),
        ))];
        if let Some(t) = telegram {
            tasks.push(tokio::spawn(node.clone().supervise(
                "admin alerts",
                crate::telegram::run_admin_alerts(instance.clone(), t.clone(), stop_rx.clone()),
            )));
            tasks.push(tokio::spawn(node.clone().supervise(
                "telegram bot",
                crate::telegram::bot::run(instance.clone(), t, stop_rx.clone()),
            )));
        }
        let poller = tokio::spawn(node.clone().supervise(
            "poller",
            crate::poller::run(instance.clone(), stop_rx, interrupted_syncs),
        ));
        tracing::info!(%addr, domain = %instance.config.domain, "pepeunit is serving");
        Ok(RunningInstance {
            addr,
            instance,
            stop,
            http,
            poller,
            federation,
            telegram: tasks,
            alerts_stop,
            mqtt,
        })
    }

    /// Waits until the HTTP server ends on its own (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let ended = (&mut self.http).await?;
        http_ended(&self.instance.node, ended)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        http_ended(&self.instance.node, self.http.await?)?;
        // the poller returns on the stop signal between jobs; a job still running after 5 s
        // (a registry sync cloning) is cancelled. Waiting first lets an hour's load history
        // write in flight finish rather than be cut off.
        let mut poller = self.poller;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut poller)
            .await
            .is_err()
        {
            poller.abort();
            let _ = poller.await;
        }
        for task in self.federation {
            // They return on the stop signal; a delivery in flight stays queued, a move
            // step is repeated by the next start.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        self.mqtt.stop().await;
        // what the meter counted this hour goes into the history (the shards are drained)
        let hour = crate::service::load::hour_of(crate::service::load::unix_now());
        if let Err(e) = self.instance.record_load_hour(hour).await {
            tracing::warn!(error = %e, "this hour's load not recorded");
        }
        let _ = self.alerts_stop.send(true);
        for task in self.telegram {
            // the bot returns on the stop signal; the alert task once its sends are done
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
        // the index's writer lock must not outlive the instance (clones of it may)
        let hub = self.instance.federation.hub().clone();
        let _ = tokio::task::spawn_blocking(move || hub.close()).await;
        self.instance.db.pool.close().await;
        Ok(())
    }
}

/// A failed HTTP server is a crash (a panic was already reported by `supervise`).
fn http_ended(node: &crate::observe::Node, ended: std::io::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = &ended {
        node.crash("task http failed", &e.to_string());
    }
    Ok(ended?)
}
