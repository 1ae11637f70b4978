import Foundation
import Store
import TestSupport
import Testing

/// Runs the built `lop` executable as a user would, against a real database.
@Suite struct CLITests {
    /// The `lop` binary SwiftPM built next to the test bundle.
    var lop: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lop").path
    }

    var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    func url(_ target: ConnectionTarget) -> String {
        target.parameters.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
    }

    @Test func migrateThenCheck() throws {
        let target = try TestDatabase.create()
        let env = ["LOP_DATABASE_URL": url(target), "LOP_CONFIG": repositoryRoot + "/Config/lop.yaml"]
        let first = try TestProcess.run([lop, "migrate", "--json"], environment: env, separateStandardError: true)
        #expect(first.status == 0)
        let report = try JSONSerialization.jsonObject(with: Data(first.output.utf8)) as? [String: Any]
        let applied = report?["applied"] as? [[String: Any]]
        let files = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot + "/SQL").filter { $0.hasSuffix(".sql") }
        #expect(applied?.count == files.count)
        #expect(applied?.first?["version"] as? Int == 1)

        let again = try TestProcess.run([lop, "migrate"], environment: env)
        #expect(again.status == 0)
        #expect(again.output.contains("up to date"))

        let check = try TestProcess.run([lop, "db", "check", "--json"], environment: env, separateStandardError: true)
        #expect(check.status == 0)
        let checked = try JSONSerialization.jsonObject(with: Data(check.output.utf8)) as? [String: Any]
        #expect((checked?["serverVersion"] as? String)?.isEmpty == false)
        #expect((checked?["applied"] as? [Any])?.count == files.count)
        #expect((checked?["pending"] as? [Any])?.isEmpty == true)
        #expect((checked?["database"] as? String)?.contains("dbname=\(target["dbname"]!)") == true)
    }

    @Test func exitCodesSayWhatWentWrong() throws {
        let config = repositoryRoot + "/Config/lop.yaml"
        let unreachable = try TestProcess.run(
            [lop, "db", "check"],
            environment: ["LOP_CONFIG": config, "LOP_DATABASE_URL": "postgresql://lop:hunter2@127.0.0.1:1/nope", "LOP_DATABASE_CONNECT_TIMEOUT_SECONDS": "2"])
        #expect(unreachable.status == 69)
        #expect(unreachable.output.contains("host=127.0.0.1 port=1 dbname=nope"))
        #expect(!unreachable.output.contains("hunter2"))

        let badConfig = try TestProcess.run([lop, "db", "check"], environment: ["LOP_CONFIG": config, "LOP_DATABASE_POOL_SIZE": "lots"])
        #expect(badConfig.status == 78)
        #expect(badConfig.output.contains("LOP_DATABASE_POOL_SIZE"))

        let usage = try TestProcess.run([lop, "migrate", "--no-such-flag"])
        #expect(usage.status == 64)

        // The search owns its settings; a bad one in the configuration still stops both programs at start.
        let worker = URL(fileURLWithPath: lop).deletingLastPathComponent().appendingPathComponent("lop-worker").path
        for program in [[lop, "db", "check"], [worker]] {
            let badSearch = try TestProcess.run(program, environment: ["LOP_CONFIG": config, "LOP_SEARCH_SIMULATIONS": "0"])
            #expect(badSearch.status == 78 && badSearch.output.contains("search.simulations"), "\(program): \(badSearch.output)")
        }
    }

    @Test func editedMigrationIsRefusedWithDataError() throws {
        let target = try TestDatabase.create()
        let dir = NSTemporaryDirectory() + "lop-cli-sql-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "CREATE SCHEMA IF NOT EXISTS lop;".write(toFile: dir + "/0001_init.sql", atomically: true, encoding: .utf8)
        let env = ["LOP_DATABASE_URL": url(target), "LOP_DATABASE_MIGRATIONS": dir, "LOP_CONFIG": repositoryRoot + "/Config/lop.yaml"]
        #expect(try TestProcess.run([lop, "migrate"], environment: env).status == 0)
        try "CREATE SCHEMA IF NOT EXISTS lop; -- edited".write(toFile: dir + "/0001_init.sql", atomically: true, encoding: .utf8)
        let refused = try TestProcess.run([lop, "migrate"], environment: env)
        #expect(refused.status == 65)
        #expect(refused.output.contains("was changed after it was applied"))
        let check = try TestProcess.run([lop, "db", "check"], environment: env)
        #expect(check.status == 65)
    }
}
