import Predictor
import Pruning
import Store

extension PredictorSample {
    /// A stored sample as the predictor learns from it; its budget is named by `Budget.identity`, so equal budgets
    /// written differently still group and byte budgets at different widths per weight do not.
    public init(_ sample: Sample) {
        let budget = (try? Budget(parsing: sample.budget))?.identity ?? "\(sample.budgetKind) \(sample.budgetValue)"
        self.init(modelHash: sample.modelHash, calibrationHash: sample.calibrationHash, units: sample.units,
                  budget: budget, keptFraction: sample.keptFraction, strategy: sample.strategy, loss: sample.loss)
    }
}
