import Foundation

/// Self-contained HTML pages (inline SVG and base64 PNG): run reports that open anywhere.
public struct HTMLReport {
    public var title: String
    private var sections: [String] = []

    public init(title: String) { self.title = title }

    public mutating func heading(_ text: String) { sections.append("<h2>\(escape(text))</h2>") }
    public mutating func paragraph(_ text: String) { sections.append("<p>\(escape(text))</p>") }
    public mutating func preformatted(_ text: String) { sections.append("<pre>\(escape(text))</pre>") }

    /// A table with a header row.
    public mutating func table(header: [String], rows: [[String]]) {
        var html = "<table><tr>" + header.map { "<th>\(escape($0))</th>" }.joined() + "</tr>"
        for row in rows { html += "<tr>" + row.map { "<td>\(escape($0))</td>" }.joined() + "</tr>" }
        sections.append(html + "</table>")
    }

    /// PNG images side by side, each with a caption, under an optional title for the row.
    public mutating func images(_ items: [(caption: String, png: Data)], title: String? = nil) {
        let figures = items.map { item in
            "<figure><img src=\"data:image/png;base64,\(item.png.base64EncodedString())\" width=\"256\"><figcaption>\(escape(item.caption))</figcaption></figure>"
        }
        let heading = title.map { "<div class=\"rowtitle\">\(escape($0))</div>" } ?? ""
        sections.append(heading + "<div class=\"row\">" + figures.joined() + "</div>")
    }

    /// Line chart of named series against epoch (1-based).
    public mutating func lineChart(title: String, series: [(name: String, values: [Double])]) {
        let width = 560.0, height = 260.0, margin = 40.0
        let all = series.flatMap(\.values).filter(\.isFinite)
        guard let low = all.min(), let high = all.max(), let count = series.map(\.values.count).max(), count > 0 else { return }
        let span = high > low ? high - low : 1
        let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
        func x(_ i: Int) -> Double { margin + (width - 2 * margin) * (count > 1 ? Double(i) / Double(count - 1) : 0.5) }
        func y(_ v: Double) -> Double { height - margin - (height - 2 * margin) * (v - low) / span }
        var svg = "<svg class=\"lines\" width=\"\(Int(width))\" height=\"\(Int(height))\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">"
        svg += "<text x=\"\(margin)\" y=\"16\">\(escape(title))</text>"
        svg += "<line x1=\"\(margin)\" y1=\"\(height - margin)\" x2=\"\(width - margin)\" y2=\"\(height - margin)\" stroke=\"#888\"/>"
        svg += "<line x1=\"\(margin)\" y1=\"\(margin)\" x2=\"\(margin)\" y2=\"\(height - margin)\" stroke=\"#888\"/>"
        svg += "<text x=\"2\" y=\"\(margin)\">\(String(format: "%.3g", high))</text><text x=\"2\" y=\"\(height - margin)\">\(String(format: "%.3g", low))</text>"
        svg += "<text x=\"\(width / 2)\" y=\"\(height - 8)\">epoch (1-\(count))</text>"
        // Series without a finite value (validation when none was held out) get neither a line nor a legend entry.
        var entries: [LegendEntry] = []
        for (index, line) in series.filter({ $0.values.contains(where: \.isFinite) }).enumerated() {
            let points = line.values.enumerated().filter { $0.element.isFinite }
                .map { String(format: "%.1f,%.1f", x($0.offset), y($0.element)) }.joined(separator: " ")
            let colour = colours[index % colours.count]
            svg += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\" points=\"\(points)\"/>"
            entries.append(LegendEntry(name: line.name, colour: colour, strokeWidth: 2))
        }
        svg += legend(entries, left: width - margin - 150, firstRow: margin - 4, spacing: 14)
        sections.append(svg + "</svg>")
    }

    /// One measure across cross-validation folds against epoch (1-based): a thin line per fold,
    /// the mean in bold, and a legend. The mean at an epoch is over the folds that trained that
    /// long (early stopping ends folds at different epochs).
    public mutating func foldChart(title: String, yTitle: String, folds: [[Double]]) {
        let width = 640.0, height = 300.0, left = 60.0, right = 130.0, top = 30.0, bottom = 45.0
        let epochs = folds.map(\.count).max() ?? 0
        let mean = (0..<epochs).map { epoch -> Double in
            let values = folds.compactMap { epoch < $0.count && $0[epoch].isFinite ? $0[epoch] : nil }
            return values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
        }
        let all = folds.flatMap { $0 }.filter(\.isFinite)
        guard epochs > 0, let lowest = all.min(), let highest = all.max() else { return }
        let span = highest > lowest ? highest - lowest : max(abs(highest), 1) * 0.1
        var low = lowest - 0.05 * span, high = highest + 0.05 * span
        if lowest >= 0 && highest <= 1 { (low, high) = (max(0, low), min(1, high)) }  // a share stays within 0...1
        let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
        func x(_ i: Int) -> Double { left + (width - left - right) * (epochs > 1 ? Double(i) / Double(epochs - 1) : 0.5) }
        func y(_ v: Double) -> Double { height - bottom - (height - top - bottom) * (v - low) / (high - low) }
        func points(_ values: [Double]) -> String {
            values.enumerated().filter { $0.element.isFinite }.map { String(format: "%.1f,%.1f", x($0.offset), y($0.element)) }.joined(separator: " ")
        }
        var svg = "<svg class=\"folds\" width=\"\(Int(width))\" height=\"\(Int(height))\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">"
        svg += String(format: "<text x=\"%.1f\" y=\"16\" font-size=\"13\">%@</text>", left, escape(title))
        for step in 0...4 {
            let value = low + (high - low) * Double(step) / 4
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", left, y(value), width - right, y(value))
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%@</text>", left - 4, y(value) + 4, String(format: "%.3g", value))
        }
        let epochStep = max(1, Int((Double(epochs) / 8).rounded(.up)))
        for epoch in stride(from: 0, to: epochs, by: epochStep) {
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>", x(epoch), height - bottom + 14, epoch + 1)
        }
        svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>", left, height - bottom, width - right, height - bottom)
        svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>", left, top, left, height - bottom)
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">epoch</text>", (left + width - right) / 2, height - 10)
        svg += String(format: "<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 14 %.1f)\">%@</text>",
                      (top + height - bottom) / 2, (top + height - bottom) / 2, escape(yTitle))
        var entries: [LegendEntry] = []
        for (index, values) in folds.enumerated() {
            let colour = colours[index % colours.count]
            svg += "<polyline class=\"fold\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.5\" stroke-opacity=\"0.8\" points=\"\(points(values))\"/>"
            entries.append(LegendEntry(name: "fold \(index + 1)", colour: colour, strokeWidth: 1.5))
        }
        svg += "<polyline class=\"mean\" fill=\"none\" stroke=\"#000\" stroke-width=\"3.5\" points=\"\(points(mean))\"/>"
        entries.append(LegendEntry(name: "mean", colour: "#000", strokeWidth: 3.5, bold: true))
        svg += legend(entries, left: width - right + 12, firstRow: top + 8, spacing: 18)
        sections.append(svg + "</svg>")
    }

    /// One line of a chart's legend: a swatch of the series' stroke, then its name.
    private struct LegendEntry {
        var name: String
        var colour: String
        var strokeWidth: Double
        var bold = false
    }

    /// A legend, one entry per row from `firstRow`, `spacing` apart: a 24-wide swatch from `left`,
    /// then the name in the series' colour.
    private func legend(_ entries: [LegendEntry], left: Double, firstRow: Double, spacing: Double) -> String {
        var svg = ""
        for (index, entry) in entries.enumerated() {
            let row = firstRow + spacing * Double(index)
            svg += String(format: "<line class=\"legend\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%@\" stroke-width=\"%.1f\"/>",
                          left, row, left + 24, row, entry.colour, entry.strokeWidth)
            svg += String(format: "<text class=\"legend\" x=\"%.1f\" y=\"%.1f\" fill=\"%@\"%@>%@</text>", left + 30, row + 4, entry.colour,
                          entry.bold ? " font-weight=\"bold\"" : "", escape(entry.name))
        }
        return svg
    }

    /// One curve of a band chart: a mean per x position with a shaded range around it (NaN: no point).
    public struct BandSeries {
        public var name: String
        public var mean: [Double]
        public var low: [Double]
        public var high: [Double]
        public init(name: String, mean: [Double], low: [Double], high: [Double]) {
            self.name = name
            self.mean = mean
            self.low = low
            self.high = high
        }
    }

    /// Curves over categorical x positions (e.g. labels per class), each with a shaded band, a
    /// legend, and an optional dashed reference line (e.g. chance).
    public mutating func bandChart(title: String, xLabels: [String], xTitle: String, series: [BandSeries],
                                   reference: (value: Double, name: String)? = nil) {
        let width = 640.0, height = 340.0, left = 50.0, right = 190.0, top = 30.0, bottom = 45.0
        var all = series.flatMap { $0.low + $0.high + $0.mean }.filter(\.isFinite)
        if let reference { all.append(reference.value) }
        guard !xLabels.isEmpty, let lowest = all.min(), let highest = all.max() else { return }
        let low = max(0, (lowest * 10).rounded(.down) / 10), high = min(1, max((highest * 10).rounded(.up) / 10, low + 0.1))
        let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
        func x(_ i: Int) -> Double { left + (width - left - right) * (xLabels.count > 1 ? Double(i) / Double(xLabels.count - 1) : 0.5) }
        func y(_ v: Double) -> Double { height - bottom - (height - top - bottom) * (v - low) / (high - low) }
        var svg = "<svg width=\"\(Int(width))\" height=\"\(Int(height))\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">"
        svg += "<text x=\"\(left)\" y=\"16\">\(escape(title))</text>"
        for tick in stride(from: low, through: high + 1e-9, by: 0.1) {
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", left, y(tick), width - right, y(tick))
            svg += String(format: "<text x=\"8\" y=\"%.1f\">%.1f</text>", y(tick) + 4, tick)
        }
        for (i, label) in xLabels.enumerated() {
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%@</text>", x(i), height - bottom + 16, escape(label))
        }
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%@</text>", (left + width - right) / 2, height - 8, escape(xTitle))
        if let reference {
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>", left, y(reference.value), width - right, y(reference.value))
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">%@</text>", width - right + 4, y(reference.value) + 4, escape(reference.name))
        }
        for (index, line) in series.enumerated() {
            let colour = colours[index % colours.count]
            let valid = line.mean.indices.filter { line.mean[$0].isFinite && line.low[$0].isFinite && line.high[$0].isFinite }
            if valid.count > 1 {
                let upper = valid.map { String(format: "%.1f,%.1f", x($0), y(line.high[$0])) }
                let lower = valid.reversed().map { String(format: "%.1f,%.1f", x($0), y(line.low[$0])) }
                svg += "<polygon fill=\"\(colour)\" fill-opacity=\"0.15\" stroke=\"none\" points=\"\((upper + lower).joined(separator: " "))\"/>"
            }
            let points = valid.map { String(format: "%.1f,%.1f", x($0), y(line.mean[$0])) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\" points=\"\(points)\"/>"
            for i in valid { svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"/>", x(i), y(line.mean[i]), colour) }
            svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"%@\"/>", width - right + 10, top + 18 * Double(index) + 4, colour)
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\">%@</text>", width - right + 26, top + 18 * Double(index) + 9, escape(line.name))
        }
        sections.append(svg + "</svg>")
    }

    /// A confusion matrix as a heat map: rows are true classes, columns predictions. Each cell
    /// shows its count; its shade, white to dark blue, is the count's share of its row.
    public mutating func confusionMatrix(_ matrix: [[Int]], classNames: [String]) {
        let cell = 56.0, left = 110.0, top = 90.0
        let size = Double(classNames.count)
        let names = classNames.map(escape)
        func name(_ i: Int) -> String { i < names.count ? names[i] : "\(i)" }
        var svg = "<svg class=\"confusion\" width=\"\(Int(left + cell * size + 10))\" height=\"\(Int(top + cell * size + 10))\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">"
        svg += "<text x=\"\(left)\" y=\"14\">predicted →</text><text x=\"4\" y=\"\(top - 6)\">true ↓</text>"
        for (c, name) in classNames.enumerated() {
            svg += "<text x=\"\(left + cell * Double(c) + 4)\" y=\"\(top - 6)\" transform=\"rotate(-30 \(left + cell * Double(c) + 4) \(top - 6))\">\(escape(name))</text>"
            svg += "<text x=\"4\" y=\"\(top + cell * Double(c) + cell / 2)\">\(escape(name))</text>"
        }
        for (r, row) in matrix.enumerated() {
            let total = max(1, row.reduce(0, +))
            for (c, count) in row.enumerated() {
                let share = Double(count) / Double(total)
                // Linear from #f7fbff (none of the row) to #08306b (all of it).
                let colour = [(247.0, 8.0), (251.0, 48.0), (255.0, 107.0)].map { Int(($0.0 + ($0.1 - $0.0) * share).rounded()) }
                svg += String(format: "<rect class=\"cell\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"rgb(%d,%d,%d)\" stroke=\"#ccc\">",
                              left + cell * Double(c), top + cell * Double(r), cell - 2, cell - 2, colour[0], colour[1], colour[2])
                svg += "<title>true \(name(r)), predicted \(name(c)): \(count) of \(row.reduce(0, +))</title></rect>"
                svg += String(format: "<text class=\"count\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" fill=\"%@\">%d</text>",
                              left + cell * Double(c) + (cell - 2) / 2, top + cell * Double(r) + cell / 2 + 4, share > 0.5 ? "#fff" : "#222", count)
            }
        }
        sections.append(svg + "</svg><p class=\"note\">Counts of clips; each row is shaded by the share of that true class (white: none, dark blue: all).</p>")
    }

    public var html: String {
        """
        <!DOCTYPE html><html><head><meta charset="utf-8"><title>\(escape(title))</title>
        <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse}
        td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}.row{display:flex;gap:12px;flex-wrap:wrap}
        figure{margin:0}figcaption{font-size:12px;text-align:center}img{image-rendering:pixelated;border:1px solid #ccc}.rowtitle{font-size:13px;margin:10px 0 4px}.note{font-size:12px;color:#666}</style>
        </head><body><h1>\(escape(title))</h1>
        \(sections.joined(separator: "\n"))
        </body></html>
        """
    }

    public func write(to path: String) throws {
        try Data(html.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
