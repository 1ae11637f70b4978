import Foundation

/// The result of evaluating strategies of one model: a JSON document and a self-contained HTML page with
/// SVG plots (keep ratio per unit for each strategy, loss against budget).
public struct Report: Codable, Sendable {
    public struct Entry: Codable, Sendable {
        /// uniform, owl, ecoflap, a strategy file, …
        public let strategy: String
        public let budget: String
        /// Fraction of the prunable parameters kept.
        public let keptFraction: Double
        public let ratios: [Double]
        public let sizes: [Int]
        public let parameterCount: Int
        public let metrics: EvaluationData.Metrics
        /// Seconds the evaluation took.
        public let seconds: Double

        public init(strategy: String, budget: String, keptFraction: Double, ratios: [Double], sizes: [Int], parameterCount: Int,
                    metrics: EvaluationData.Metrics, seconds: Double) {
            self.strategy = strategy
            self.budget = budget
            self.keptFraction = keptFraction
            self.ratios = ratios
            self.sizes = sizes
            self.parameterCount = parameterCount
            self.metrics = metrics
            self.seconds = seconds
        }
    }

    public let model: String
    public let modelHash: String
    public let data: String
    public let importance: String
    public let units: [String]
    public let original: EvaluationData.Metrics
    public let originalParameterCount: Int
    public var entries: [Entry]

    public init(model: String, modelHash: String, data: String, importance: String, units: [String], original: EvaluationData.Metrics,
                originalParameterCount: Int, entries: [Entry] = []) {
        self.model = model
        self.modelHash = modelHash
        self.data = data
        self.importance = importance
        self.units = units
        self.original = original
        self.originalParameterCount = originalParameterCount
        self.entries = entries
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    /// A plain-text table: one row per budget, one loss (and accuracy) column per strategy.
    public var table: String {
        let strategies = ordered(entries.map(\.strategy)), budgets = ordered(entries.map(\.budget))
        let accuracy = original.accuracy != nil
        let header = "| budget |" + strategies.map { " \($0) loss |" + (accuracy ? " \($0) acc |" : "") }.joined()
        let rule = "|---:|" + strategies.map { _ in "---:|" + (accuracy ? "---:|" : "") }.joined()
        var lines = [header, rule]
        lines.append("| 1 (original) |" + strategies.map { _ in String(format: " %.4f |", original.loss) + (accuracy ? String(format: " %.3f |", original.accuracy!) : "") }.joined())
        for budget in budgets {
            var line = "| \(budget) |"
            for s in strategies {
                if let e = entries.first(where: { $0.budget == budget && $0.strategy == s }) {
                    line += String(format: " %.4f |", e.metrics.loss) + (accuracy ? String(format: " %.3f |", e.metrics.accuracy ?? .nan) : "")
                } else {
                    line += " |" + (accuracy ? " |" : "")
                }
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    func ordered(_ values: [String]) -> [String] {
        var seen = Set<String>()
        return values.filter { seen.insert($0).inserted }
    }

    // MARK: HTML

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]

    /// A re-fitted variant (`NAME+ls`) is drawn dashed in its strategy's colour, so lines that overlap stay apart.
    static let refitSuffix = "+ls"

    public func html() -> String {
        let strategies = ordered(entries.map(\.strategy)), budgets = ordered(entries.map(\.budget))
        let families = ordered(strategies.map { $0.hasSuffix(Self.refitSuffix) ? String($0.dropLast(Self.refitSuffix.count)) : $0 })
        func color(_ s: String) -> String {
            let family = s.hasSuffix(Self.refitSuffix) ? String(s.dropLast(Self.refitSuffix.count)) : s
            return Self.palette[(families.firstIndex(of: family) ?? 0) % Self.palette.count]
        }
        var body = "<h1>lop report: \(escape(model))</h1>\n<p>data <code>\(escape(data))</code> · importance \(escape(importance)) · model sha256 <code>\(modelHash.prefix(16))…</code></p>\n"
        body += "<h2>Loss against budget</h2>\n"
        let lossSeries = strategies.map { s in
            (s, color(s), entries.filter { $0.strategy == s }.sorted { $0.keptFraction < $1.keptFraction }.map { ($0.keptFraction, $0.metrics.loss) })
        }
        body += Self.plot(series: lossSeries, xLabel: "fraction of FFN parameters kept", yLabel: "loss", reference: original.loss, integerX: false)
        for budget in budgets {
            body += "<h2>Keep ratio per unit at budget \(escape(budget))</h2>\n"
            let series = strategies.compactMap { s in
                entries.first { $0.strategy == s && $0.budget == budget }.map { e in (s, color(s), e.ratios.enumerated().map { (Double($0.offset), $0.element) }) }
            }
            body += Self.plot(series: series, xLabel: "unit index (0: \(units.first ?? ""), \(max(units.count - 1, 0)): \(units.last ?? ""))",
                              yLabel: "keep ratio", reference: nil, integerX: true)
        }
        body += "<h2>Table</h2>\n<table>\n<tr><th>budget</th><th>strategy</th><th>kept</th><th>parameters</th><th>loss</th><th>perplexity</th><th>accuracy</th><th>seconds</th></tr>\n"
        body += "<tr><td>original</td><td></td><td>1</td><td>\(originalParameterCount)</td><td>\(String(format: "%.4f", original.loss))</td><td>\(original.perplexity.map { String(format: "%.3f", $0) } ?? "")</td><td>\(original.accuracy.map { String(format: "%.3f", $0) } ?? "")</td><td></td></tr>\n"
        for e in entries {
            body += "<tr><td>\(escape(e.budget))</td><td>\(escape(e.strategy))</td><td>\(String(format: "%.4f", e.keptFraction))</td><td>\(e.parameterCount)</td>"
            body += "<td>\(String(format: "%.4f", e.metrics.loss))</td><td>\(e.metrics.perplexity.map { String(format: "%.3f", $0) } ?? "")</td>"
            body += "<td>\(e.metrics.accuracy.map { String(format: "%.3f", $0) } ?? "")</td><td>\(String(format: "%.2f", e.seconds))</td></tr>\n"
        }
        body += "</table>\n"
        return """
            <!DOCTYPE html>
            <html><head><meta charset="utf-8"><title>lop report: \(escape(model))</title>
            <style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}svg{background:#fafafa}</style>
            </head><body>
            \(body)</body></html>

            """
    }

    func escape(_ s: String) -> String { Self.escapeXML(s) }

    static func escapeXML(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// A line plot with axes, tick labels (whole numbers only when `integerX`), an optional dashed reference line,
    /// and a legend of swatches in the right margin, one row per series (the reference's included), so no label
    /// sits on a line and no two labels share a row.
    static func plot(series: [(name: String, color: String, points: [(Double, Double)])], xLabel: String, yLabel: String, reference: Double?,
                     integerX: Bool) -> String {
        let (width, height, left, right, top, bottom) = (640.0, 300.0, 60.0, 150.0, 15.0, 45.0)
        let xs = series.flatMap { $0.points.map(\.0) }, ys = series.flatMap { $0.points.map(\.1) } + (reference.map { [$0] } ?? [])
        guard let x0 = xs.min(), let x1 = xs.max(), let y0 = ys.filter(\.isFinite).min(), let y1 = ys.filter(\.isFinite).max() else { return "<p>(nothing to plot)</p>\n" }
        let (xSpan, ySpan) = (max(x1 - x0, 1e-9), max(y1 - y0, 1e-9))
        func px(_ x: Double) -> Double { left + (x - x0) / xSpan * (width - left - right) }
        func py(_ y: Double) -> Double { height - bottom - (y - y0) / ySpan * (height - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-size=\"11\">\n"
        svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        let xTicks: [Double] = integerX
            ? Array(stride(from: x0.rounded(.up), through: x1, by: max(1, (xSpan / 10).rounded(.up))))
            : (0...4).map { x0 + xSpan * Double($0) / 4 }
        for x in xTicks {
            svg += "<text x=\"\(px(x))\" y=\"\(height - bottom + 14)\" text-anchor=\"middle\">\(integerX ? String(Int(x)) : String(format: "%.3g", x))</text>"
        }
        for i in 0...4 {
            let y = y0 + ySpan * Double(i) / 4
            svg += "<text x=\"\(left - 4)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(String(format: "%.4g", y))</text>\n"
        }
        svg += "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 8)\" text-anchor=\"middle\">\(xLabel)</text>"
        svg += "<text x=\"12\" y=\"\((top + height - bottom) / 2)\" transform=\"rotate(-90 12 \((top + height - bottom) / 2))\" text-anchor=\"middle\">\(yLabel)</text>\n"
        var legend: [(name: String, color: String, dash: String?)] = series.map { ($0.name, $0.color, $0.name.hasSuffix(refitSuffix) ? "6 3" : nil) }
        if let reference {
            svg += "<line x1=\"\(left)\" y1=\"\(py(reference))\" x2=\"\(width - right)\" y2=\"\(py(reference))\" stroke=\"gray\" stroke-dasharray=\"2 3\"/>\n"
            legend.append(("original", "gray", "2 3"))
        }
        for (s, entry) in zip(series, legend) {
            let points = s.points.filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            let dash = entry.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(dash) points=\"\(points)\"/>"
            for p in s.points where p.1.isFinite { svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"\(s.color)\"/>", px(p.0), py(p.1)) }
            svg += "\n"
        }
        for (i, entry) in legend.enumerated() {
            let y = top + 10 + Double(i) * 16
            let dash = entry.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            svg += "<line x1=\"\(width - right + 8)\" y1=\"\(y)\" x2=\"\(width - right + 30)\" y2=\"\(y)\" stroke=\"\(entry.color)\" stroke-width=\"2\"\(dash)/>"
            svg += "<text x=\"\(width - right + 34)\" y=\"\(y + 4)\" fill=\"\(entry.color)\">\(escapeXML(entry.name))</text>\n"
        }
        return svg + "</svg>\n"
    }
}
