import Evaluation
import Foundation
import Jobs
import LopConfig
import LopCore
import Pruning
import Queue
import Store
import TestSupport
import Testing

/// The kinds of job: one enum, the database's CHECK, the config's vocabulary and the handlers agree.
@Suite struct JobContractTests {
    /// The config's `data` section maps onto the data files' own defaults, and a template override shows through.
    @Test func theDataSectionsDefaultsAreTheDataFilesDefaults() {
        #expect(DataFile.Options(LopConfig().data) == DataFile.Options())
        var changed = LopConfig().data
        changed.imagesOutsideFolder = false
        changed.maxImagePixels = 7
        #expect(DataFile.Options(changed) == DataFile.Options(imagesOutsideFolder: false, maximumPixels: 7))
        #expect(DataFile.Options().with(promptTemplate: "Q: {question}").promptTemplate == "Q: {question}")
    }

    @Test func theDatabaseCheckListsExactlyTheJobKinds() throws {
        let pool = ConnectionPool(target: try TestDatabase.createMigrated(), size: 1)
        defer { pool.close() }
        let definition: String = try pool.withConnection { c in
            try c.query("""
                SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint
                WHERE conrelid = 'lop.jobs'::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%kind%'
                """).single().decode("d")
        }
        // CHECK ((kind = ANY (ARRAY['compress'::text, ...])))
        let listed = definition.split(separator: "'").enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
        #expect(Set(listed) == Set(JobKind.allCases.map(\.rawValue)) && listed.count == JobKind.allCases.count, "\(definition)")
        #expect(Set(knownJobKinds) == Set(JobKind.allCases.map(\.rawValue)))
        #expect(JobHandlers.all().map(\.kind) == JobKind.allCases)
        // An INSERT of another kind fails in the database.
        #expect(throws: StoreError.self) {
            try pool.withConnection { try $0.execute("INSERT INTO lop.jobs (kind) VALUES ('mining')") }
        }
    }

    /// Each handler's decoding names the field and the expected form.
    @Test func decodingErrorsNameTheFieldAndTheExpectedForm() throws {
        let cases: [(JobKind, String, String)] = [
            (.sleep, #"{"seconds": "ten"}"#, "'seconds' must be a number"),
            (.sleep, #"{}"#, "'seconds' is required"),
            (.sleep, #"[1, 2]"#, "'args' must be a JSON object"),
            (.compress, #"{"model": "m", "budget": {"kind": "weights", "value": 3}}"#, "'budget.kind' must be fraction, parameters, flops_per_token or bytes"),
            (.compress, #"{"model": "m", "budget": 0.5, "evaluate": "yes"}"#, "'evaluate' must be true or false"),
            (.compress, #"{"model": "m:x", "budget": 0.5}"#, "'model'"),
            (.sweep, #"{"model": "m", "budgets": [0.5, "lots"]}"#, "'budgets[1]' budget \"lots\" is neither a fraction"),
            (.search, #"{"model": "m", "budget": 0.5, "samples": 2.5}"#, "'samples' must be an integer in 1...100000"),
            (.search, #"{"model": "m", "budget": 0.5, "vision": 1}"#, "'vision' must be true or false"),
            (.train, #"{"steps": 0}"#, "'steps' must be an integer in 1...1000000"),
            (.train, #"{"budgets": [0.5, 2]}"#, "'budgets' must hold fractions in (0, 1]"),
            (.evaluate, #"{"data": "corpus"}"#, "'model' is required"),
            (.evaluate, #"{"model": "m", "data": ""}"#, "'data' must be a non-empty string"),
        ]
        let handlers = JobHandlers.all()
        for (kind, args, message) in cases {
            let handler = try #require(handlers.first { $0.kind == kind })
            #expect { _ = try handler.arguments(JSONB(text: args)) } throws: { error in
                (error as? ArgumentError).map { "\($0)".contains(message) } ?? false
            }
        }
        // Every kind that takes arguments refuses one it does not know, by name.
        for handler in handlers where handler.kind != .noop {
            #expect { _ = try handler.arguments(JSONB(text: #"{"colour": "red"}"#)) } throws: {
                "\($0)".contains("'colour' is not an argument of \(handler.kind)")
            }
        }
    }

    /// What a sweep writes for its children is what a search job reads back, field for field.
    @Test func searchArgumentsRoundTripThroughTheirCanonicalForm() throws {
        let text = #"{"model": "m", "budget": "bytes:2000@4", "samples": 12, "importance": "wanda", "vision": true, "search": {"simulations": 9}}"#
        let arguments = try JobArguments.decode(SearchArguments.self, from: JSONB(text: text), kind: .search)
        #expect(arguments.budget == .bytes(2000, bytesPerWeight: 4) && arguments.options.samples == 12 && arguments.options.importance == .wanda)
        let written = try JSONB(encoding: arguments)
        let again = try JobArguments.decode(SearchArguments.self, from: written, kind: .search)
        #expect(again.options == arguments.options && again.budget == arguments.budget)
        #expect(written.text.contains(#""budget":"bytes:2000@4""#))
        // A fraction keeps its exact value in the canonical text.
        let exact = Budget.fraction(0.123456789)
        #expect(try Budget(parsing: exact.description) == exact)
    }
}
