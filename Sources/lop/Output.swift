import ArgumentParser
import Evaluation
import Foundation
import Predictor
import LopConfig
import Models
import Pruning
import Queue
import Store

/// Exit codes from sysexits(3), so that scripts can tell a bad setup from a bad database.
enum Exit {
    static let failure: Int32 = 1
    static let dataError: Int32 = 65
    static let unavailable: Int32 = 69
    static let configError: Int32 = 78
}

/// Runs a command body, turning lop's errors into a one-line message on standard error and a meaningful exit code.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ConfigError {
        fail(error.description, code: Exit.configError)
    } catch let error as StoreError {
        fail(error.description, code: error.isConnectionLoss ? Exit.unavailable : Exit.failure)
    } catch let error as MigrationError {
        fail(error.description, code: Exit.dataError)
    } catch let error as QueueError {
        fail(error.description, code: Exit.failure)
    } catch let error as SafeTensorsError {
        fail(error.description, code: Exit.dataError)
    } catch let error as CheckpointError {
        fail(error.description, code: Exit.dataError)
    } catch let error as ModelConfigError {
        fail(error.description, code: Exit.dataError)
    } catch let error as TokenDataError {
        fail(error.description, code: Exit.dataError)
    } catch let error as BudgetError {
        fail(error.description, code: Exit.dataError)
    } catch let error as EvaluationError {
        fail(error.description, code: Exit.dataError)
    } catch let error as PredictorError {
        fail(error.description, code: Exit.dataError)
    } catch let error as RegistryError {
        fail(error.description, code: Exit.failure)
    }
}

private func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("lop: error: \(message)\n".utf8))
    exit(code)
}

/// Writes a JSON document (sorted keys, ISO dates) and a newline to standard output.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    FileHandle.standardOutput.write(try encoder.encode(value) + Data("\n".utf8))
}
