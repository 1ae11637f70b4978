import Fixtures
import Foundation
import Models

/// The fixture models as tests load them.
public enum FixtureModels {
    /// tiny-llava: the committed folder when there is one, else a copy trained briefly by the fixture's recipe
    /// (its exact shapes, which is what architecture and pruning tests need).
    public static func tinyLlava() throws -> Model {
        let folder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llava"
        if FileManager.default.fileExists(atPath: folder + "/config.json") { return try Model.load(directory: folder) }
        return .llava(try Fixtures.trainTinyLlava(recipe: Fixtures.Recipe.tinyLlava.with(steps: 5)) { _ in })
    }
}
