import LopCore
import Predictor
import Pruning
import Store

extension PredictorSample {
    /// A stored sample as the predictor learns from it.
    public init(_ sample: Sample) {
        self.init(modelHash: sample.modelHash, calibrationHash: sample.calibrationHash, units: sample.units, budget: sample.budget, keptFraction: sample.keptFraction, strategy: sample.strategy, loss: sample.loss)
    }
}
