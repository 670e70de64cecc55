//! Prometheus text exposition (format 0.0.4) of a metrics registry.
//!
//! `prometheus_client` writes OpenMetrics: a counter's `# HELP`/`# TYPE`
//! lines name the family (`meridian_requests`) while its samples are
//! `meridian_requests_total`, and the body ends with `# EOF`. Served as
//! `text/plain; version=0.0.4`, Prometheus's own text parser (and
//! `promtool check metrics`) then sees counters without help text. This
//! rewrites the descriptor lines of counters to the sample name and drops
//! the OpenMetrics-only lines, so every process serves one format that both
//! scrapers and linters read alike.

use prometheus_client::registry::Registry;

/// The content type [`encode`]'s output is served with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// This process's resident memory in bytes (`VmRSS` of `/proc/self/status`;
/// `None` where there is no such file).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    rss_of_status(&status)
}

fn rss_of_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `registry` in Prometheus text format 0.0.4.
pub fn encode(registry: &Registry) -> String {
    let mut open_metrics = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut open_metrics, registry);
    to_prometheus_text(&open_metrics)
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4 (see the module).
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let lines: Vec<&str> = open_metrics.lines().collect();
    let counters: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + counters.len() * 16);
    for line in lines {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str(prefix);
                    out.push_str(name);
                    out.push_str("_total ");
                    out.push_str(tail);
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_vmrss() {
        let status = "Name:\tmeridian\nVmPeak:\t  999 kB\nVmRSS:\t   75312 kB\nThreads:\t9\n";
        assert_eq!(rss_of_status(status), Some(75312 * 1024));
        assert_eq!(rss_of_status("Name:\tx\n"), None);
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
    }
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn counters_are_described_by_their_sample_name() {
        let mut registry = Registry::default();
        let requests = Counter::<u64>::default();
        requests.inc_by(3);
        registry.register("meridian_requests", "Requests served", requests);
        registry.register(
            "meridian_leader",
            "1 while leading",
            Gauge::<i64>::default(),
        );
        let text = encode(&registry);
        assert_eq!(
            text,
            "# HELP meridian_requests_total Requests served.\n\
             # TYPE meridian_requests_total counter\n\
             meridian_requests_total 3\n\
             # HELP meridian_leader 1 while leading.\n\
             # TYPE meridian_leader gauge\n\
             meridian_leader 0\n"
        );
    }
}
