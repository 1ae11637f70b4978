import Foundation
import Store
import TestSupport
import Testing

/// Every supported type goes to a real server and back.
@Suite struct ValueRoundTripTests {
    let connection: Connection

    init() throws {
        connection = try Connection(try TestDatabase.create())
    }

    /// Sends `value` as a parameter cast to `pgType` and decodes what the server returns.
    func roundTrip<T: PostgresCodable>(_ value: T, as pgType: String) throws -> T {
        return try connection.query("SELECT \(value)::\(fragment: SQL(unsafe: pgType)) AS v").single().decode("v", as: T.self)
    }

    @Test func scalars() throws {
        #expect(try roundTrip("plain", as: "text") == "plain")
        #expect(try roundTrip("ünïcødé ✓ 日本語 🚀", as: "text") == "ünïcødé ✓ 日本語 🚀")
        #expect(try roundTrip("", as: "text") == "")
        #expect(try roundTrip(true, as: "bool") == true)
        #expect(try roundTrip(false, as: "bool") == false)
        #expect(try roundTrip(Int.max, as: "int8") == Int.max)
        #expect(try roundTrip(Int.min, as: "int8") == Int.min)
        #expect(try roundTrip(Int32.min, as: "int4") == Int32.min)
        #expect(try roundTrip(Int16(-7), as: "int2") == -7)
        #expect(try roundTrip(0.1, as: "float8") == 0.1)
        #expect(try roundTrip(-1.5e-300, as: "float8") == -1.5e-300)
        #expect(try roundTrip(Double.infinity, as: "float8") == .infinity)
        #expect(try roundTrip(Double.nan, as: "float8").isNaN)
        #expect(try roundTrip(Float(3.25), as: "float4") == 3.25)
        #expect(try roundTrip(Float.leastNonzeroMagnitude, as: "float4") == Float.leastNonzeroMagnitude)
        #expect(try roundTrip(Data([0, 1, 254, 255]), as: "bytea") == Data([0, 1, 254, 255]))
    }

    @Test func timestamps() throws {
        let date = Date(timeIntervalSince1970: 1_795_000_000.123456)
        let back = try roundTrip(date, as: "timestamptz")
        #expect(abs(back.timeIntervalSince1970 - date.timeIntervalSince1970) < 1e-6)
        // The server's own clock, read as UTC, is close to ours.
        let now = try connection.query("SELECT now() AS t").single().decode("t", as: Date.self)
        #expect(abs(now.timeIntervalSinceNow) < 60)
        // A value the server parses from a non-UTC literal comes back as the same instant.
        let parsed = try connection.query("SELECT '2026-01-02 03:04:05.5+02'::timestamptz AS t").single().decode("t", as: Date.self)
        #expect(parsed.timeIntervalSince1970 == 1_767_315_845.5)
    }

    @Test func jsonAndArrays() throws {
        struct Args: Codable, Equatable { var model: String; var budget: Double; var tags: [String] }
        let args = Args(model: "tiny-llama", budget: 0.5, tags: ["a", "ü\"q"])
        let json = try roundTrip(try JSONB(encoding: args), as: "jsonb")
        #expect(try json.decode(Args.self) == args)
        #expect(try roundTrip([1.5, -2, .infinity, Double.leastNonzeroMagnitude], as: "float8[]") == [1.5, -2, .infinity, Double.leastNonzeroMagnitude])
        #expect(try roundTrip([Float](), as: "real[]") == [])
        #expect(try roundTrip([Float(0.25), 7], as: "real[]") == [0.25, 7])
        #expect(try roundTrip([3, -4, Int.max], as: "int8[]") == [3, -4, Int.max])
        #expect(try roundTrip(["a b", "c,d", "e\"f", "g\\h", "NULL", ""], as: "text[]") == ["a b", "c,d", "e\"f", "g\\h", "NULL", ""])
    }

    @Test func nulls() throws {
        let absent: String? = nil
        let row = try connection.query("SELECT NULL::text AS t, NULL::int8 AS i, NULL::jsonb AS j, NULL::float8[] AS a, \(absent) AS p").single()
        #expect(try row.decode("t", as: String?.self) == nil)
        #expect(try row.decode("i", as: Int?.self) == nil)
        #expect(try row.decode("j", as: JSONB?.self) == nil)
        #expect(try row.decode("a", as: [Double]?.self) == nil)
        #expect(try row.decode("p", as: String?.self) == nil)
        #expect(try row.isNull("t"))
        let error = #expect(throws: StoreError.self) { try row.decode("i", as: Int.self) }
        #expect(error?.description.contains("column 'i'") == true)
        #expect(error?.description.contains("NULL") == true)
    }

    @Test func valuesThatDoNotFitGiveClearErrors() throws {
        let row = try connection.query("SELECT 3000000000::int8 AS big, 1e300::float8 AS huge, 'x'::text AS word, '{1,NULL}'::float8[] AS holes").single()
        let tooBig = #expect(throws: StoreError.self) { try row.decode("big", as: Int32.self) }
        #expect(tooBig?.description.contains("'big'") == true)
        #expect(tooBig?.description.contains("3000000000") == true)
        #expect(tooBig?.description.contains("Int32") == true)
        #expect(throws: StoreError.self) { try row.decode("huge", as: Float.self) }
        let notNumber = #expect(throws: StoreError.self) { try row.decode("word", as: Double.self) }
        #expect(notNumber?.description.contains("'x'") == true)
        let hole = #expect(throws: StoreError.self) { try row.decode("holes", as: [Double].self) }
        #expect(hole?.description.contains("element 2 is NULL") == true)
        let missing = #expect(throws: StoreError.self) { try row.decode("nope", as: Int.self) }
        #expect(missing?.description.contains("no column 'nope'") == true)
    }

    @Test func parametersThatLookLikeSQLAreStoredVerbatim() throws {
        try connection.execute("CREATE TABLE x (id serial PRIMARY KEY, body text NOT NULL)")
        let hostile = "'; DROP TABLE x; --"
        let id = try connection.query("INSERT INTO x (body) VALUES (\(hostile)) RETURNING id").single().decode("id", as: Int.self)
        let body = try connection.query("SELECT body FROM x WHERE id = \(id)").single().decode("body", as: String.self)
        #expect(body == hostile)
        #expect(try connection.query("SELECT count(*) AS n FROM x").single().decode("n", as: Int.self) == 1)
    }

    @Test func serverErrorsCarryTheirState() throws {
        try connection.execute("CREATE TABLE u (k text UNIQUE, n int CHECK (n > 0))")
        try connection.execute("INSERT INTO u VALUES (\("a"), \(1))")
        let duplicate = #expect(throws: StoreError.self) { try connection.execute("INSERT INTO u VALUES (\("a"), \(2))") }
        guard case let .server(error)? = duplicate else { Issue.record("not a server error"); return }
        #expect(error.isUniqueViolation)
        #expect(error.constraint == "u_k_key")
        #expect(!duplicate!.description.contains("(k)=(a)"), "row values belong in debugDescription only")
        #expect(duplicate!.debugDescription.contains("(k)=(a)"))
        let check = #expect(throws: StoreError.self) { try connection.execute("INSERT INTO u VALUES (\("b"), \(0))") }
        guard case let .server(checkError)? = check else { Issue.record("not a server error"); return }
        #expect(checkError.isCheckViolation)
        // The connection is still usable after errors.
        #expect(try connection.query("SELECT 1 AS one").single().decode("one", as: Int.self) == 1)
    }
}
