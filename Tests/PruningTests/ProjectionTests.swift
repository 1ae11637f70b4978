import Foundation
import LopCore
import Testing
import Tensor
@testable import Pruning

@Suite struct ProjectionTests {
    /// Budgets written differently but equal share an identity; byte budgets at different widths do not.
    @Test func budgetIdentities() throws {
        #expect(try Budget(parsing: "50%").identity == Budget(parsing: "0.5").identity)
        #expect(try Budget(parsing: "bytes:1000000").identity != Budget(parsing: "bytes:1000000@4").identity)
        #expect(try Budget(parsing: "bytes:1000000@2").identity == Budget(parsing: "bytes:1000000").identity)
        #expect(try Budget(parsing: "params:1000").identity != Budget(parsing: "flops:1000").identity)
        #expect(Budget.fraction(0.45).identity != Budget.fraction(0.4500001).identity)
    }

    /// Hundreds of random unit sets, ratios, bounds and budgets: counts are allowed, the budget is never
    /// exceeded, and the shortfall is under one alignment step of the heaviest unit.
    @Test func randomRequestsMeetTheirBudgetWithinOneStep() throws {
        var g = SeededGenerator(seed: 21)
        var (met, refused) = (0, 0)
        for _ in 0..<600 {
            let units = (0..<Int.random(in: 1...12, using: &g)).map { i in
                PrunableUnit(name: "u\(i)", width: Int.random(in: 1...700, using: &g), parametersPerNeuron: [3 * 64, 3 * 128, 2 * 96 + 1].randomElement(using: &g)!)
            }
            let bounds = KeepBounds(minimumRatio: Double.random(in: 0...0.4, using: &g), maximumRatio: Double.random(in: 0.6...1, using: &g),
                                    alignment: [1, 1, 8, 64].randomElement(using: &g)!)
            let ratios = units.map { _ in Double.random(in: 0...1.5, using: &g) }
            let total = units.reduce(0) { $0 + $1.width * $1.parametersPerNeuron }
            let budget: Budget = Bool.random(using: &g) ? .fraction(Double.random(in: 0.05...1, using: &g))
                                                        : .parameters(Int.random(in: 1...total, using: &g))
            let target: Double = switch budget {
            case .fraction(let f): f * Double(total)
            case .parameters(let n): Double(n)
            default: 0
            }
            do {
                let counts = try Projection.project(ratios: ratios, units: units, budget: budget, bounds: bounds)
                for (unit, k) in zip(units, counts) { #expect(bounds.allowed(unit).contains(k), "\(unit.name): \(k)") }
                let kept = Double(Projection.keptParameters(counts, units: units))
                let step = units.map { Double(bounds.alignment * $0.parametersPerNeuron) }.max()!
                let ceiling = Double(units.reduce(0) { $0 + bounds.allowed($1).last! * $1.parametersPerNeuron })
                #expect(kept <= target + 1e-6)
                #expect(kept > min(target, ceiling) - step, "kept \(kept) of \(target)")
                met += 1
            } catch {
                // Refused only when even the smallest allowed counts exceed the budget, or a unit has no allowed count.
                if units.contains(where: { bounds.allowed($0).isEmpty }) {
                    #expect(error.description.contains("has no count"))
                } else {
                    let floor = units.reduce(0) { $0 + bounds.allowed($1).first! * $1.parametersPerNeuron }
                    #expect(Double(floor) > target, "\(error)")
                }
                refused += 1
            }
        }
        #expect(met > 300)
    }

    @Test func equalUnitsAtAFractionAreUniformAndExact() throws {
        let units = (0..<6).map { PrunableUnit(name: "l\($0)", width: 384, parametersPerNeuron: 384) }
        let counts = try Projection.project(ratios: Array(repeating: 0.5, count: 6), units: units, budget: .fraction(0.5))
        #expect(counts == Array(repeating: 192, count: 6))
        // Unequal proposals keep their order and still meet the budget exactly.
        let skewed = try Projection.project(ratios: [0.2, 0.3, 0.4, 0.6, 0.7, 0.8], units: units, budget: .fraction(0.5))
        #expect(skewed.reduce(0, +) == 6 * 192)
        #expect(skewed == skewed.sorted())
    }

    @Test func badRequestsSayWhy() {
        let units = [PrunableUnit(name: "a", width: 10, parametersPerNeuron: 4), PrunableUnit(name: "b", width: 10, parametersPerNeuron: 4)]
        func message(_ ratios: [Double], _ budget: Budget, _ bounds: KeepBounds = KeepBounds()) -> String {
            do { _ = try Projection.project(ratios: ratios, units: units, budget: budget, bounds: bounds); return "" } catch { return error.description }
        }
        #expect(message([0.5], .fraction(0.5)).contains("1 ratios for 2 units"))
        #expect(message([0.5, .nan], .fraction(0.5)).contains("ratio nan for b"))
        #expect(message([0.5, -1], .fraction(0.5)).contains("ratio -1.0 for b"))
        #expect(message([0.5, 0.5], .fraction(1.5)).contains("outside (0, 1]"))
        #expect(message([0.5, 0.5], .fraction(0)).contains("outside (0, 1]"))
        #expect(message([0.5, 0.5], .fraction(0.05)).contains("allows 4 parameters but the bounds keep at least 8"))
        #expect(message([0.5, 0.5], .fraction(0.5), KeepBounds(minimumRatio: 0.5, maximumRatio: 0.6, alignment: 8)).contains("a (10 neurons) has no count"))
        #expect((try? Projection.project(ratios: [], units: [], budget: .fraction(0.5))) == nil)
    }

    @Test func budgetKindsAreOneFormulaApart() throws {
        let units = [PrunableUnit(name: "a", width: 100, parametersPerNeuron: 10), PrunableUnit(name: "b", width: 50, parametersPerNeuron: 20)]
        let ratios = [0.5, 0.5]
        let byCount = try Projection.project(ratios: ratios, units: units, budget: .parameters(1000))
        #expect(try Projection.project(ratios: ratios, units: units, budget: .flopsPerToken(2000)) == byCount)
        #expect(try Projection.project(ratios: ratios, units: units, budget: .bytes(2000, bytesPerWeight: 2)) == byCount)
        #expect(try Projection.project(ratios: ratios, units: units, budget: .fraction(0.5)) == byCount)
        #expect(Projection.keptParameters(byCount, units: units) == 1000)
    }
}
