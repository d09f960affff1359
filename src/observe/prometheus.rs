//! The Prometheus text exposition (format 0.0.4) of a [`NodeReport`], served at
//! `GET {PU_APP_PREFIX}/metrics`.

use std::fmt::{Display, Write};

use super::NodeReport;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric; values that are unavailable (no `/proc`) are left out.
pub fn render(r: &NodeReport) -> String {
    let mut t = Text::default();
    t.family(
        "pepeunit_requests_total",
        "counter",
        "Requests that reached the backend, by channel.",
    );
    for (channel, c) in &r.channels {
        t.sample("pepeunit_requests_total", &[("channel", channel)], c.total);
    }
    t.gauge(
        "pepeunit_uptime_seconds",
        "Seconds since the instance started.",
        Some(r.process.uptime_secs),
    );
    let p = &r.process;
    t.gauge(
        "pepeunit_process_cpu_percent",
        "CPU used by the process, percent of one core.",
        p.cpu_percent,
    );
    t.gauge(
        "pepeunit_process_resident_memory_bytes",
        "Resident memory of the process.",
        p.rss_bytes,
    );
    t.gauge(
        "pepeunit_process_threads",
        "Threads of the process.",
        p.threads,
    );
    let m = &r.machine;
    t.gauge(
        "pepeunit_machine_cpu_percent",
        "CPU used on the machine, percent of all cores.",
        m.cpu_percent,
    );
    t.gauge("pepeunit_machine_cpus", "CPUs of the machine.", m.cpus);
    t.gauge(
        "pepeunit_machine_memory_total_bytes",
        "Memory of the machine.",
        m.mem_total_bytes,
    );
    t.gauge(
        "pepeunit_machine_memory_available_bytes",
        "Memory available on the machine.",
        m.mem_available_bytes,
    );
    t.gauge(
        "pepeunit_machine_load1",
        "Load average over 1 minute.",
        m.load_1,
    );
    t.gauge(
        "pepeunit_machine_load5",
        "Load average over 5 minutes.",
        m.load_5,
    );
    t.gauge(
        "pepeunit_machine_load15",
        "Load average over 15 minutes.",
        m.load_15,
    );

    t.family(
        "pepeunit_errors_total",
        "counter",
        "Errors by kind (the tracker keeps the 500 most recently seen kinds).",
    );
    for e in &r.errors {
        t.sample("pepeunit_errors_total", &[("kind", &e.kind)], e.count);
    }
    t.family(
        "pepeunit_admin_alerts_total",
        "counter",
        "Crash alerts produced for the admins.",
    );
    t.sample("pepeunit_admin_alerts_total", &[], r.alerts_sent);

    let q = &r.mqtt;
    t.gauge(
        "pepeunit_mqtt_backend_connected",
        "1 while the MQTT core is connected to the broker.",
        Some(u8::from(q.backend_connected)),
    );
    t.family(
        "pepeunit_mqtt_queue_depth",
        "gauge",
        "Messages waiting in each shard queue of the MQTT core.",
    );
    for (shard, depth) in q.queue_depths.iter().enumerate() {
        t.sample(
            "pepeunit_mqtt_queue_depth",
            &[("shard", &shard.to_string())],
            depth,
        );
    }
    t.gauge(
        "pepeunit_mqtt_pipelines_active",
        "Data pipes running in the MQTT core's shards.",
        Some(q.pipes.active),
    );
    t.gauge(
        "pepeunit_mqtt_pipelines_memory_bytes",
        "Memory of the running data pipes, by their own accounting.",
        Some(q.pipes.memory_bytes),
    );
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&q.counters) {
        for (name, value) in counters {
            let metric = format!("pepeunit_mqtt_{name}_total");
            t.family(
                &metric,
                "counter",
                &format!("MQTT core counter {name} (see GET /metrics/mqtt)."),
            );
            t.sample(&metric, &[], value);
        }
    }
    t.0
}

#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: Option<impl Display>) {
        if let Some(v) = value {
            self.family(name, "gauge", help);
            self.sample(name, &[], v);
        }
    }
}

/// Label values escape backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{Channel, Node};

    #[test]
    fn renders_families_and_escapes_labels() {
        let node = Node::new(Default::default(), std::time::Duration::from_secs(60));
        node.count(Channel::Rest);
        node.error("say \"hi\"\\\nbye", "x");
        let text = render(&node.report(Default::default(), false, 0));
        assert!(text.contains("# TYPE pepeunit_requests_total counter\n"));
        assert!(text.contains("pepeunit_requests_total{channel=\"rest\"} 1\n"));
        assert!(text.contains("pepeunit_requests_total{channel=\"graphql\"} 0\n"));
        assert!(
            text.contains(r#"pepeunit_errors_total{kind="say \"hi\"\\\nbye"} 1"#),
            "{text}"
        );
        assert!(text.contains("pepeunit_mqtt_received_total 0\n"));
        assert_eq!(escape_label("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
    }
}
