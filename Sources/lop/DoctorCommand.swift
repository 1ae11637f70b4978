import ArgumentParser
import Bootstrap
import Foundation
import LopConfig
import Logging
import Store
import Tensor
import Webhooks

/// `lop doctor`: whether this machine can run lop, one line per check.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the database, migrations, BLAS kernel and threads, libcurl, the artifact root and free memory.",
        discussion: "Exits 1 when a check fails (a warning does not).")

    @OptionGroup var options: GlobalOptions

    struct Check: Encodable {
        let name: String
        /// ok, warn or fail.
        let status: String
        let detail: String
    }

    struct Report: Encodable {
        let checks: [Check]
        let blas: BLASKernel.Report
        let memory: Memory
    }

    struct Memory: Encodable {
        let totalBytes: Int
        let availableBytes: Int
        enum CodingKeys: String, CodingKey { case totalBytes = "total_bytes", availableBytes = "available_bytes" }
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            BLAS.setThreads(config.blas.threads)
            var checks: [Check] = []
            checks += databaseChecks(config)
            let blas = BLASKernel.report
            let blasFits = BLASKernel.level(ofCore: blas.core) >= min(BLASKernel.cpuLevel, .avx2)
            checks.append(Check(name: "blas", status: blasFits ? "ok" : "warn",
                                detail: "core \(blas.core) (chosen by \(blas.chosenBy); library's own \(blas.libraryCore)), \(blas.threads) threads, CPU \(blas.cpu): \(blas.note)"))
            checks.append(Check(name: "libcurl", status: "ok", detail: libcurlVersion))
            checks.append(artifactCheck(config.artifacts.root))
            let memory = Self.memory()
            checks.append(Check(name: "memory", status: memory.availableBytes > 1 << 30 ? "ok" : "warn",
                                detail: String(format: "%.1f GiB available of %.1f GiB", Double(memory.availableBytes) / 1_073_741_824,
                                               Double(memory.totalBytes) / 1_073_741_824)))
            if options.json {
                try printJSON(Report(checks: checks, blas: blas, memory: memory))
            } else {
                for c in checks { print("\(c.status.padding(toLength: 5, withPad: " ", startingAt: 0)) \(c.name.padding(toLength: 11, withPad: " ", startingAt: 0)) \(c.detail)") }
            }
            if checks.contains(where: { $0.status == "fail" }) { throw ExitCode.failure }
        }
    }

    func databaseChecks(_ config: LopConfig) -> [Check] {
        let logger = Logger(label: "lop.doctor")
        do {
            let pool = try config.makePool(logger: logger)
            let (version, applied) = try pool.withConnection { ($0.serverVersion, try Migrator.applied(on: $0)) }
            var checks = [Check(name: "database", status: "ok", detail: "\(pool.target), PostgreSQL \(version)")]
            do {
                let migrator = Migrator(migrations: try Migrator.load(directory: config.database.migrations), logger: logger)
                try migrator.verify(applied)
                let pending = migrator.migrations.count - applied.count
                checks.append(Check(name: "migrations", status: pending == 0 ? "ok" : "warn",
                                    detail: "\(applied.count) applied, \(max(pending, 0)) pending" + (pending > 0 ? " (run `lop migrate`)" : "")))
            } catch {
                checks.append(Check(name: "migrations", status: "fail", detail: "\(error)"))
            }
            return checks
        } catch {
            return [Check(name: "database", status: "fail", detail: "\(error)"), Check(name: "migrations", status: "fail", detail: "database unreachable")]
        }
    }

    func artifactCheck(_ root: String) -> Check {
        let probe = root + "/.lop-doctor-\(getpid())"
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try Data("ok".utf8).write(to: URL(fileURLWithPath: probe))
            try FileManager.default.removeItem(atPath: probe)
            return Check(name: "artifacts", status: "ok", detail: "\(root) is writable")
        } catch {
            return Check(name: "artifacts", status: "fail", detail: "\(root) is not writable: \(error.localizedDescription)")
        }
    }

    /// MemTotal and MemAvailable from /proc/meminfo (zeros where it cannot be read).
    static func memory() -> Memory {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return Memory(totalBytes: 0, availableBytes: 0) }
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        return Memory(totalBytes: field("MemTotal"), availableBytes: field("MemAvailable"))
    }
}
