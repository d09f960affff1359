//! CPU and memory of the process and the machine, read from Linux's `/proc`. Elsewhere every
//! value is `None` ("unavailable"): this is a Linux server product.
//!
//! CPU percentages come from the difference of two samples. Both `/proc/self/stat` and
//! `/proc/stat` count in the same clock ticks (USER_HZ), so the process's share is computed
//! against the machine's total without knowing the tick rate.

use serde::Serialize;
use utoipa::ToSchema;

/// The raw texts of one sample; `None` where a file could not be read.
#[derive(Default)]
pub struct ProcTexts {
    pub self_stat: Option<String>,
    pub self_status: Option<String>,
    pub stat: Option<String>,
    pub meminfo: Option<String>,
    pub loadavg: Option<String>,
}

impl ProcTexts {
    pub fn read() -> ProcTexts {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        ProcTexts {
            self_stat: read("/proc/self/stat"),
            self_status: read("/proc/self/status"),
            stat: read("/proc/stat"),
            meminfo: read("/proc/meminfo"),
            loadavg: read("/proc/loadavg"),
        }
    }
}

/// Process CPU time (utime + stime), in ticks, from `/proc/self/stat`.
pub fn process_ticks(self_stat: &str) -> Option<u64> {
    // the command name (field 2) may hold spaces and parentheses: fields count from the last ')'
    let rest = &self_stat[self_stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // field 3 (state) is fields[0]; utime is field 14, stime field 15
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Machine CPU ticks from `/proc/stat`: (total, idle including iowait, number of CPUs).
pub fn machine_ticks(stat: &str) -> Option<(u64, u64, u64)> {
    let first = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal; guest times are already in user/nice
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    Some((total, idle, cpus.max(1)))
}

/// The first number after `key` in a `Key:   value [kB]` file (`/proc/self/status`,
/// `/proc/meminfo`); values in kB are returned in bytes.
pub fn field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let mut words = line[key.len() + 1..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    Some(if words.next() == Some("kB") {
        n * 1024
    } else {
        n
    })
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average(loadavg: &str) -> Option<[f64; 3]> {
    let mut w = loadavg.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([w.next()??, w.next()??, w.next()??])
}

/// What the process uses now (CPU from the sampler's last two samples).
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ProcessReport {
    /// Percent of one core over the last sampling period (above 100 on several cores).
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub threads: Option<u64>,
    /// Seconds since this instance started.
    pub uptime_secs: u64,
}

/// What the machine has and uses now.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct MachineReport {
    /// Percent of all cores busy over the last sampling period.
    pub cpu_percent: Option<f64>,
    pub cpus: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub load_1: Option<f64>,
    pub load_5: Option<f64>,
    pub load_15: Option<f64>,
}

/// Keeps the previous CPU sample so that each new one yields percentages.
#[derive(Default)]
pub struct CpuSampler {
    prev: Option<(u64, u64, u64)>,
    /// (process % of one core, machine % busy, cpus) of the last period.
    pub last: Option<(f64, f64, u64)>,
}

impl CpuSampler {
    pub fn sample(&mut self, texts: &ProcTexts) {
        let process = texts.self_stat.as_deref().and_then(process_ticks);
        let machine = texts.stat.as_deref().and_then(machine_ticks);
        let (Some(p), Some((total, idle, cpus))) = (process, machine) else {
            self.prev = None;
            self.last = None;
            return;
        };
        if let Some((p0, total0, idle0)) = self.prev {
            let dt = total.saturating_sub(total0);
            if dt > 0 {
                let busy = dt.saturating_sub(idle.saturating_sub(idle0));
                let machine = busy as f64 * 100.0 / dt as f64;
                // the total counts every CPU: one core's worth is dt / cpus
                let process = p.saturating_sub(p0) as f64 * 100.0 * cpus as f64 / dt as f64;
                self.last = Some((round2(process), round2(machine), cpus));
            }
        }
        self.prev = Some((p, total, idle));
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Memory, threads and load from `texts` (instantaneous), CPU from `cpu`.
pub fn reports(
    texts: &ProcTexts,
    cpu: &CpuSampler,
    uptime_secs: u64,
) -> (ProcessReport, MachineReport) {
    let status = texts.self_status.as_deref();
    let meminfo = texts.meminfo.as_deref();
    let load = texts.loadavg.as_deref().and_then(load_average);
    let cpus = texts
        .stat
        .as_deref()
        .and_then(machine_ticks)
        .map(|(_, _, n)| n);
    (
        ProcessReport {
            cpu_percent: cpu.last.map(|c| c.0),
            rss_bytes: status.and_then(|s| field(s, "VmRSS")),
            threads: status.and_then(|s| field(s, "Threads")),
            uptime_secs,
        },
        MachineReport {
            cpu_percent: cpu.last.map(|c| c.1),
            cpus,
            mem_total_bytes: meminfo.and_then(|m| field(m, "MemTotal")),
            mem_available_bytes: meminfo.and_then(|m| field(m, "MemAvailable")),
            load_1: load.map(|l| l[0]),
            load_5: load.map(|l| l[1]),
            load_15: load.map(|l| l[2]),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF_STAT: &str = "4242 (pepe unit) (x)) S 1 4242 4242 0 -1 4194560 3025 0 0 0 \
        150 50 0 0 20 0 12 0 171717 1234567 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
    const STAT: &str = "cpu  1000 0 500 8000 500 0 0 0 0 0\n\
        cpu0 500 0 250 4000 250 0 0 0 0 0\ncpu1 500 0 250 4000 250 0 0 0 0 0\n\
        intr 123\nctxt 456\n";
    const STATUS: &str =
        "Name:\tpepeunit\nVmPeak:\t  300000 kB\nVmRSS:\t   51200 kB\nThreads:\t12\n";
    const MEMINFO: &str =
        "MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    4000000 kB\n";

    #[test]
    fn parses_proc_files() {
        assert_eq!(process_ticks(SELF_STAT), Some(200));
        assert_eq!(machine_ticks(STAT), Some((10_000, 8_500, 2)));
        assert_eq!(field(STATUS, "VmRSS"), Some(51_200 * 1024));
        assert_eq!(field(STATUS, "Threads"), Some(12));
        assert_eq!(field(STATUS, "Vm"), None);
        assert_eq!(field(MEMINFO, "MemAvailable"), Some(4_000_000 * 1024));
        assert_eq!(
            load_average("0.50 1.25 2.00 3/456 7890\n"),
            Some([0.5, 1.25, 2.0])
        );
        assert_eq!(load_average("garbage"), None);
        assert_eq!(process_ticks("no parenthesis"), None);
    }

    #[test]
    fn cpu_percentages_come_from_two_samples() {
        let texts = |proc_ticks: u64, user: u64, idle: u64| ProcTexts {
            self_stat: Some(format!("1 (p) S {} {proc_ticks} 0", "0 ".repeat(10))),
            stat: Some(format!(
                "cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0\ncpu1 0\n"
            )),
            ..Default::default()
        };
        let mut cpu = CpuSampler::default();
        cpu.sample(&texts(100, 1000, 1000));
        assert!(cpu.last.is_none(), "one sample has no rate");
        // 200 ticks pass on 2 CPUs (100 per core): the machine was busy 150, the process 50
        cpu.sample(&texts(150, 1150, 1050));
        assert_eq!(cpu.last, Some((50.0, 75.0, 2)));
        let (p, m) = reports(&texts(150, 1150, 1050), &cpu, 7);
        assert_eq!(p.cpu_percent, Some(50.0));
        assert_eq!(p.uptime_secs, 7);
        assert_eq!(m.cpus, Some(2));
        assert_eq!(
            m.mem_total_bytes, None,
            "unreadable files are unavailable, not 0"
        );
    }
}
