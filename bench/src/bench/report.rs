//! The table printed at the end.

use super::*;

/// The report as a table.
pub fn table(report: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.1}"));
    out.push_str(&format!("machine: {}\n\n", report["machine"]));
    out.push_str(&format!(
        "pgbench: {} tps (1 row/commit, 32 clients), {} rows/s (100 rows/commit)\n\n",
        f(&report["pgbench"]["one_row_per_commit_tps_32_clients"]),
        f(&report["pgbench"]["hundred_rows_per_commit_rows_per_s"])
    ));
    out.push_str("scenario                     clients      rate/s     p50 ms     p95 ms     p99 ms     max ms  errors  peak RSS MiB\n");
    let row = |out: &mut String, name: &str, r: &Value, rate: &str| {
        let l = &r["latency"];
        out.push_str(&format!(
            "{name:<28} {:>7} {:>11} {:>10} {:>10} {:>10} {:>10} {:>7} {:>13}\n",
            r["clients"],
            f(&r[rate]),
            f(&l["p50_ms"]),
            f(&l["p95_ms"]),
            f(&l["p99_ms"]),
            f(&l["max_ms"]),
            r["errors"].as_u64().map_or("-".into(), |e| e.to_string()),
            f(&r["serve_peak_rss_mib"])
        ));
    };
    for r in report["store_appends"].as_array().into_iter().flatten() {
        row(&mut out, "store appends (events)", r, "events_per_s");
    }
    if !report["catch_up_before_http_s"].is_null() {
        out.push_str(&format!(
            "(serve caught up on the store appends' events in {} s before the HTTP scenarios began)\n",
            f(&report["catch_up_before_http_s"])
        ));
    }
    for r in report["http_commands"].as_array().into_iter().flatten() {
        row(&mut out, "HTTP commands", r, "commands_per_s");
    }
    for v in [&report["visibility"], &report["visibility_raise_only"]] {
        if v.is_null() {
            continue;
        }
        out.push_str(&format!(
        "visibility, {} at {}/s (sent {}/s, last answer after {} s): p50 {} ms, p99 {} ms, failed {}; command answer p50 {} ms, p99 {} ms\n",
        v["workload"].as_str().unwrap_or_default(),
        v["target_per_s"],
        f(&v["achieved_per_s"]),
        f(&v["seconds_until_last_answer"]),
        f(&v["visibility"]["p50_ms"]),
        f(&v["visibility"]["p99_ms"]),
        v["failed"],
        f(&v["command_latency"]["p50_ms"]),
        f(&v["command_latency"]["p99_ms"])
        ));
    }
    let subs = &report["subscriptions"];
    if !subs.is_null() {
        let (off, on) = (&subs["without_subscriptions"], &subs["with_subscriptions"]);
        out.push_str(&format!(
            "subscriptions, {} over {} sockets at {}/s (sent {}/s, failed {}): delivery after the answer p50 {} ms, p99 {} ms, missed {}; ticket row reads per command {} (without subscriptions {}), db transactions per command {} (without {}); serve CPU {} cores (without {})\n",
            on["subscriptions"],
            on["sockets"],
            on["target_per_s"],
            f(&on["achieved_per_s"]),
            on["failed"],
            f(&on["delivery_after_answer"]["p50_ms"]),
            f(&on["delivery_after_answer"]["p99_ms"]),
            on["deliveries_missed"],
            f(&on["ticket_reads_per_command"]),
            f(&off["ticket_reads_per_command"]),
            f(&on["db_transactions_per_command"]),
            f(&off["db_transactions_per_command"]),
            f(&on["serve_cpu_cores"]),
            f(&off["serve_cpu_cores"]),
        ));
    }
    let reads = &report["graphql_reads"];
    if !reads.is_null() {
        row(
            &mut out,
            "GraphQL ticket by id",
            &reads["ticket_by_id"],
            "queries_per_s",
        );
        row(
            &mut out,
            "GraphQL technician queue",
            &reads["technician_queue"],
            "queries_per_s",
        );
    }
    if !report["generate"].is_null() {
        out.push_str(&format!(
            "generated {} events at {} events/s; live catch-up {} events/s, peak RSS {} MiB\n",
            report["generate"]["events"],
            f(&report["generate"]["events_per_s"]),
            f(&report["live_catch_up"]["events_per_s"]),
            f(&report["live_catch_up"]["serve_peak_rss_mib"])
        ));
    }
    for (key, what) in [
        (
            "http_commands_32_rounds",
            "HTTP commands at 32 clients / pgbench tps",
        ),
        ("rebuild_rounds", "slowest rebuild / pgbench rows"),
    ] {
        if let Some(rounds) = report[key].as_array() {
            let ratios: Vec<String> = rounds
                .iter()
                .map(|r| format!("{:.3}", r["ratio"].as_f64().unwrap_or(f64::NAN)))
                .collect();
            out.push_str(&format!(
                "rounds of {what}: {} (the median one is shown)\n",
                ratios.join(" / ")
            ));
        }
    }
    for r in report["rebuild"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "rebuild {:<14} {} events in {} s = {} events/s\n",
            r["projection"].as_str().unwrap_or(""),
            r["events"],
            f(&r["seconds"]),
            f(&r["events_per_s"])
        ));
    }
    for (key, what) in [
        (
            "pgbench_next_to_commands_32",
            "tps (1 row/commit) around HTTP commands at 32 clients",
        ),
        (
            "pgbench_next_to_rebuild",
            "rows/s (100 rows/commit) around the rebuilds",
        ),
    ] {
        let limit = &report[key];
        if !limit.is_null() {
            out.push_str(&format!(
                "pgbench {what}: {} before, {} after, mean {}\n",
                f(&limit["before"]),
                f(&limit["after"]),
                f(&limit["mean"])
            ));
        }
    }
    out.push_str(&format!(
        "\nratios (to pgbench around the scenario where it ran): commands(32)/pgbench tps = {:.3}; slowest rebuild/pgbench rows = {:.3}\n",
        report["ratios"]["commands_32_clients_vs_pgbench_one_row_tps"]
            .as_f64()
            .unwrap_or(f64::NAN),
        report["ratios"]["slowest_rebuild_vs_pgbench_100_rows_per_s"]
            .as_f64()
            .unwrap_or(f64::NAN)
    ));
    out
}
