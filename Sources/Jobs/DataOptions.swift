import Evaluation
import LopConfig

extension DataFile.Options {
    /// The configuration's `data` section.
    public init(_ data: LopConfig.DataFiles) {
        self.init(promptTemplate: data.promptTemplate, imagesOutsideFolder: data.imagesOutsideFolder, maximumPixels: data.maxImagePixels)
    }

    /// With a job's `prompt_template` argument, when it gives one.
    public func with(promptTemplate: String?) -> DataFile.Options {
        var options = self
        if let promptTemplate { options.promptTemplate = promptTemplate }
        return options
    }
}
