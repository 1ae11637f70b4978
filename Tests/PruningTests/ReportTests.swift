import Evaluation
import Foundation
import Testing

/// The HTML report's plots: whole-number ticks for unit indices, one legend row per series (the reference's
/// included), re-fitted variants dashed in their strategy's colour, names escaped.
@Test func reportPlotsHaveIntegerUnitTicksAndALegendRowPerSeries() throws {
    let metrics = { (loss: Double) in try JSONDecoder().decode(EvaluationData.Metrics.self, from: Data(#"{"loss": \#(loss), "count": 10}"#.utf8)) }
    var report = Report(model: "m", modelHash: String(repeating: "a", count: 64), data: "d", importance: "lop",
                        units: (0..<7).map { "language.layers.\($0).mlp" }, original: try metrics(1), originalParameterCount: 100)
    for (strategy, loss) in [("uniform", 1.3), ("uniform+ls", 1.2), ("<lop>", 1.1)] {
        for budget in ["0.3", "0.5"] {
            report.entries.append(Report.Entry(strategy: strategy, budget: budget, keptFraction: Double(budget)!, ratios: Array(repeating: 0.5, count: 7),
                                               sizes: Array(repeating: 4, count: 7), parameterCount: 50, metrics: try metrics(loss), seconds: 0.1))
        }
    }
    let html = report.html()
    let svgs = html.components(separatedBy: "<svg").dropFirst().map { $0.components(separatedBy: "</svg>")[0] }
    #expect(svgs.count == 3)
    // The unit plots' x ticks are 0…6, never fractions.
    let ticks = svgs[1].components(separatedBy: "text-anchor=\"middle\">").dropFirst().compactMap { $0.components(separatedBy: "<").first }
        .filter { Double($0) != nil }
    #expect(ticks == ["0", "1", "2", "3", "4", "5", "6"], "\(ticks)")
    // The loss plot's legend: the three strategies and the original, each on its own row.
    func legendRows(_ svg: String) -> [String] {
        svg.components(separatedBy: "\n").filter { $0.hasPrefix("<line x1=\"498") }.map { $0.components(separatedBy: "y1=\"")[1].components(separatedBy: "\"")[0] }
    }
    let rows = legendRows(svgs[0])
    #expect(rows.count == 4 && Set(rows).count == 4, "\(rows)")
    #expect(svgs[0].contains(">original</text>") && svgs[0].contains("&lt;lop&gt;") && !svgs[0].contains("<lop>"))
    // uniform+ls: uniform's colour, dashed.
    let dashed = svgs[0].components(separatedBy: "\n").filter { $0.contains("<polyline") && $0.contains("stroke-dasharray=\"6 3\"") }
    let solid = svgs[0].components(separatedBy: "\n").filter { $0.contains("<polyline") && !$0.contains("stroke-dasharray") }
    #expect(dashed.count == 1 && solid.count == 2)
    let colour = { (line: String) in line.components(separatedBy: "stroke=\"")[1].components(separatedBy: "\"")[0] }
    #expect(colour(dashed[0]) == colour(solid[0]) && colour(solid[0]) != colour(solid[1]))
}
