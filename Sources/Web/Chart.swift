import Foundation

/// The base model's chart as inline SVG: loss against kept fraction, with every sample as a dot (the loss its
/// search scored it with, on calibration data), the best-per-budget front and the champion predictor's curve as
/// lines, uniform baselines and registered variants (held-out loss) as marks, and the base model's held-out
/// loss as a dashed line. Each mark carries `data-series` so that a
/// browser test can count them.
enum ChartSVG {
    struct Series {
        let name: String
        let legend: String
        let colour: String
        let points: [DashboardData.Point]
        let line: Bool
        let mark: String  // "dot", "square", "diamond"
    }

    static func render(_ chart: DashboardData.Chart) -> String {
        let series = [
            Series(name: "samples", legend: "samples (calibration)", colour: "#9aa5b1", points: chart.samples, line: false, mark: "dot"),
            Series(name: "front", legend: "best per budget (calibration)", colour: "#1f77b4", points: chart.front, line: true, mark: "dot"),
            Series(name: "uniform", legend: "uniform (calibration)", colour: "#ff7f0e", points: chart.uniform, line: false, mark: "square"),
            Series(name: "predicted", legend: "champion predictor (held-out)", colour: "#9467bd", points: chart.predicted, line: true, mark: "diamond"),
            Series(name: "variants", legend: "registered variants (held-out)", colour: "#2ca02c", points: chart.variants, line: false, mark: "diamond"),
        ]
        let all = series.flatMap(\.points)
        guard !all.isEmpty else { return "<p class=\"empty\">No samples or variants yet.</p>" }
        let (width, height, left, right, top, bottom) = (860.0, 380.0, 60.0, 240.0, 16.0, 40.0)
        let xs = all.map(\.keptFraction), ys = all.map(\.loss) + (chart.base.map { [$0] } ?? [])
        let (x0, x1) = padded(xs.min()!, xs.max()!), (y0, y1) = padded(ys.min()!, ys.max()!)
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (width - left - right) }
        func py(_ y: Double) -> Double { height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom) }
        var svg = "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"held-out loss against kept fraction\">"
        svg += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(width - left - right)\" height=\"\(height - top - bottom)\" fill=\"#fff\" stroke=\"#ccc\"/>"
        for t in ticks(x0, x1) {
            svg += "<line x1=\"\(f(px(t)))\" y1=\"\(height - bottom)\" x2=\"\(f(px(t)))\" y2=\"\(height - bottom + 4)\" stroke=\"#666\"/>"
            svg += "<text x=\"\(f(px(t)))\" y=\"\(height - bottom + 16)\" text-anchor=\"middle\" font-size=\"11\">\(label(t))</text>"
        }
        for t in ticks(y0, y1) {
            svg += "<line x1=\"\(left - 4)\" y1=\"\(f(py(t)))\" x2=\"\(left)\" y2=\"\(f(py(t)))\" stroke=\"#666\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(f(py(t) + 4))\" text-anchor=\"end\" font-size=\"11\">\(label(t))</text>"
        }
        svg += "<text x=\"\(f((left + width - right) / 2))\" y=\"\(height - 6)\" text-anchor=\"middle\" font-size=\"12\">kept fraction of FFN parameters</text>"
        svg += "<text x=\"14\" y=\"\(f((top + height - bottom) / 2))\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 14 \(f((top + height - bottom) / 2)))\">loss</text>"
        if let base = chart.base {
            svg += "<line data-series=\"base\" x1=\"\(left)\" y1=\"\(f(py(base)))\" x2=\"\(width - right)\" y2=\"\(f(py(base)))\" stroke=\"#d62728\" stroke-dasharray=\"5 4\"/>"
        }
        for s in series where !s.points.isEmpty {
            let sorted = s.points.sorted { $0.keptFraction < $1.keptFraction }
            if s.line, sorted.count > 1 {
                let path = sorted.map { "\(f(px($0.keptFraction))),\(f(py($0.loss)))" }.joined(separator: " ")
                svg += "<polyline fill=\"none\" stroke=\"\(s.colour)\" stroke-width=\"1.5\" points=\"\(path)\"/>"
            }
            for p in sorted {
                let (x, y) = (px(p.keptFraction), py(p.loss))
                let title = "<title>\(HTML.escape(p.label)): loss \(label(p.loss)) at \(label(p.keptFraction))</title>"
                switch s.mark {
                case "square": svg += "<rect class=\"point\" data-series=\"\(s.name)\" x=\"\(f(x - 3.5))\" y=\"\(f(y - 3.5))\" width=\"7\" height=\"7\" fill=\"\(s.colour)\">\(title)</rect>"
                case "diamond": svg += "<polygon class=\"point\" data-series=\"\(s.name)\" points=\"\(f(x)),\(f(y - 5)) \(f(x + 5)),\(f(y)) \(f(x)),\(f(y + 5)) \(f(x - 5)),\(f(y))\" fill=\"\(s.colour)\">\(title)</polygon>"
                default: svg += "<circle class=\"point\" data-series=\"\(s.name)\" cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"\(s.name == "samples" ? 2.5 : 3.5)\" fill=\"\(s.colour)\">\(title)</circle>"
                }
            }
        }
        // The legend sits beside the plot, so it never hides a line.
        var ly = top + 10
        for s in series + [Series(name: "base", legend: "base model (held-out)", colour: "#d62728", points: chart.base.map { [DashboardData.Point(keptFraction: 1, loss: $0, label: "base")] } ?? [], line: true, mark: "")] where !s.points.isEmpty {
            svg += "<rect x=\"\(width - right + 12)\" y=\"\(f(ly - 8))\" width=\"10\" height=\"10\" fill=\"\(s.colour)\"/>"
            svg += "<text x=\"\(width - right + 28)\" y=\"\(f(ly + 1))\" font-size=\"12\">\(s.legend) (\(s.points.count))</text>"
            ly += 18
        }
        return svg + "</svg>"
    }

    static func padded(_ lo: Double, _ hi: Double) -> (Double, Double) {
        let span = hi - lo
        guard span > 1e-12 else { return (lo - max(abs(lo) * 0.05, 0.05), hi + max(abs(hi) * 0.05, 0.05)) }
        return (lo - span * 0.06, hi + span * 0.06)
    }

    /// About five round ticks inside [lo, hi].
    static func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        let raw = (hi - lo) / 5, magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var t = ceil(lo / step) * step, out: [Double] = []
        while t <= hi + step * 1e-9 { out.append(t); t += step }
        return out
    }

    static func label(_ x: Double) -> String { String(format: "%g", (x * 10000).rounded() / 10000) }
    static func f(_ x: Double) -> String { String(format: "%.1f", x) }
}
