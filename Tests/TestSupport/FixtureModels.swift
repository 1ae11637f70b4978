import Foundation
import Models

/// The fixture models as tests load them.
public enum FixtureModels {
    /// The committed tiny-llava folder.
    public static func tinyLlava() throws -> Model {
        try Model.load(directory: TestDatabase.repositoryRoot + "/Fixtures/tiny-llava")
    }
}
