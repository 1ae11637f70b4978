import Foundation
import Prometheus
import Store

/// `/metrics` in Prometheus' text format, computed from the database at each scrape. Workers and notifiers on
/// many machines write their jobs, leases and delivery attempts to the one PostgreSQL; reading the figures from
/// there gives one scrape target that covers every process, needs no port opened on any worker, and keeps no
/// counter in memory that a restart would lose.
struct MetricsExporter {
    let pool: ConnectionPool

    /// Seconds, for job durations and claim latency.
    static let durationBuckets: [Double] = [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400]
    /// Seconds, for webhook posts.
    static let postBuckets: [Double] = [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    func render() throws -> String {
        let registry = PrometheusCollectorRegistry()
        try pool.withConnection { c in
            for row in try c.query("SELECT state::text AS state, kind, count(*)::float8 AS n FROM lop.jobs GROUP BY 1, 2") {
                registry.makeGauge(name: "lop_jobs", labels: [("state", try row.decode("state")), ("kind", try row.decode("kind"))],
                                   help: "Jobs in lop.jobs by state and kind").set(try row.decode("n") as Double)
            }
            // Finished jobs of the last day: how long their last attempt ran, by kind.
            var durations: [String: ValueHistogram] = [:]
            for row in try c.query("""
                SELECT kind, extract(epoch FROM finalized_at - attempted_at)::float8 AS seconds FROM lop.jobs
                WHERE finalized_at > now() - interval '1 day' AND attempted_at IS NOT NULL AND finalized_at >= attempted_at
                """) {
                let kind: String = try row.decode("kind")
                if durations[kind] == nil {
                    durations[kind] = registry.makeValueHistogram(name: "lop_job_duration_seconds", labels: [("kind", kind)], buckets: Self.durationBuckets,
                                                                  help: "Run time of jobs finished in the last day, by kind")
                }
                durations[kind]!.record(try row.decode("seconds") as Double)
            }
            let claims = registry.makeValueHistogram(name: "lop_job_claim_latency_seconds", buckets: Self.durationBuckets,
                                                     help: "From scheduled to claimed, for jobs claimed in the last day")
            for row in try c.query("""
                SELECT extract(epoch FROM attempted_at - scheduled_at)::float8 AS seconds FROM lop.jobs
                WHERE attempted_at > now() - interval '1 day' AND attempted_at >= scheduled_at
                """) {
                claims.record(try row.decode("seconds") as Double)
            }
            // A worker's heartbeats extend its leases: the time left on its freshest lease says it is alive.
            for row in try c.query("""
                SELECT attempted_by AS worker, count(*)::float8 AS n, extract(epoch FROM max(lease_expires_at) - now())::float8 AS left
                FROM lop.jobs WHERE state = 'running' AND attempted_by IS NOT NULL GROUP BY 1
                """) {
                let worker: String = try row.decode("worker")
                registry.makeGauge(name: "lop_worker_running_jobs", labels: [("worker", worker)], help: "Jobs each worker is running").set(try row.decode("n") as Double)
                registry.makeGauge(name: "lop_worker_lease_seconds_left", labels: [("worker", worker)],
                                   help: "Seconds left on the worker's freshest lease (heartbeats extend it)").set(try row.decode("left") as Double)
            }
            for row in try c.query("SELECT state::text AS state, count(*)::float8 AS n FROM lop.webhook_deliveries GROUP BY 1") {
                registry.makeGauge(name: "lop_webhook_deliveries", labels: [("state", try row.decode("state"))], help: "Webhook deliveries by state")
                    .set(try row.decode("n") as Double)
            }
            let posts = registry.makeValueHistogram(name: "lop_webhook_post_seconds", buckets: Self.postBuckets, help: "Webhook post latency, attempts of the last day")
            for row in try c.query("SELECT (duration_ms / 1000)::float8 AS seconds FROM lop.webhook_attempts WHERE started_at > now() - interval '1 day'") {
                posts.record(try row.decode("seconds") as Double)
            }
            let samples = try c.query("""
                SELECT count(*)::float8 AS total, count(*) FILTER (WHERE created_at > now() - interval '1 minute')::float8 AS minute FROM lop.samples
                """).single()
            registry.makeGauge(name: "lop_samples", help: "Scored strategies stored in lop.samples").set(try samples.decode("total") as Double)
            registry.makeGauge(name: "lop_search_evaluations_per_second", help: "Strategies scored and stored per second over the last minute")
                .set((try samples.decode("minute") as Double) / 60)
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}
