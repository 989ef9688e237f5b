import CryLabTraining
import Foundation
import Testing

/// Every match of `pattern` in `text`, as the first capture group (or the whole match).
private func matches(_ pattern: String, in text: String) -> [String] {
    let expression = try! NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators])
    return expression.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { match in
        let range = match.numberOfRanges > 1 ? match.range(at: 1) : match.range
        return String(text[Range(range, in: text)!])
    }
}

/// The inline <svg> elements of a page whose class is `kind`.
private func charts(_ kind: String, in html: String) -> [String] {
    matches("(<svg class=\"\(kind)\".*?</svg>)", in: html)
}

@Suite("What the reports show", .serialized)
struct ReportTests {
    @Test("a fold chart draws a line per fold, the mean in bold over the folds still training, and a legend")
    func foldChart() throws {
        var page = HTMLReport(title: "folds")
        page.foldChart(title: "loss", yTitle: "loss", folds: [[4, 2, 1], [2, 2], [3, 2, 3]])
        let chart = try #require(charts("folds", in: page.html).first)
        #expect(matches("<polyline class=\"fold\"", in: chart).count == 3)
        let mean = matches("<polyline class=\"mean\"[^>]*stroke-width=\"([0-9.]+)\"", in: chart)
        #expect(mean.count == 1 && Double(mean[0])! > 3)
        #expect(matches("<text class=\"legend\"[^>]*>([^<]*)</text>", in: chart) == ["fold 1", "fold 2", "fold 3", "mean"])
        // The mean's three points: (4+2+3)/3 = 3, 2, (1+3)/2 = 2 (fold 2 stopped after two epochs),
        // so its last two points sit at the same height.
        let points = matches("<polyline class=\"mean\"[^>]*points=\"([^\"]*)\"", in: chart)[0].split(separator: " ")
        #expect(points.count == 3)
        let heights = points.map { Double($0.split(separator: ",")[1])! }
        #expect(heights[1] == heights[2] && heights[0] < heights[1], "\(points)")
    }

    @Test("the fine-tuning report: a chart per measure with every fold and the mean, the confusion matrix with its counts")
    func finetuneReport() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-report-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let summary = try FinetuneResumeTests().run(folder, resume: false)
        let html = try String(contentsOfFile: try #require(summary.report), encoding: .utf8)
        let folds = summary.crossValidation.folds.count
        #expect(folds == 3)
        let curves = charts("folds", in: html)
        #expect(curves.count == 3, "training loss, validation loss, validation balanced accuracy")
        for chart in curves {
            #expect(matches("<polyline class=\"fold\"", in: chart).count == folds)
            #expect(matches("<polyline class=\"mean\"", in: chart).count == 1)
            #expect(matches("<text class=\"legend\"[^>]*>([^<]*)</text>", in: chart) == (1...folds).map { "fold \($0)" } + ["mean"])
        }
        let confusion = try #require(charts("confusion", in: html).first)
        let matrix = summary.crossValidation.pooled.confusion
        #expect(matches("<rect class=\"cell\"", in: confusion).count == matrix.count * matrix.count)
        let counts = matches("<text class=\"count\"[^>]*>([^<]*)</text>", in: confusion)
        #expect(counts == matrix.flatMap { $0 }.map(String.init), "cells row by row, each showing its count")
        #expect(!html.contains("<script"), "a report needs no JavaScript")
    }

    @Test("the pretraining report: input, masked input and reconstruction of three validation clips side by side")
    func pretrainReport() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (summary, _) = try tinyPretraining(epochs: 2, in: folder)
        let html = try String(contentsOfFile: try #require(summary.report), encoding: .utf8)
        let rows = matches("(<div class=\"row\">.*?</div>)", in: html)
        #expect(rows.count == 3)
        for row in rows {
            #expect(matches("<figcaption>([^<]*)</figcaption>", in: row) == ["input", "masked input", "reconstruction"])
            let images = matches("src=\"data:image/png;base64,([^\"]*)\"", in: row).compactMap { Data(base64Encoded: $0) }
            #expect(images.count == 3 && images.allSatisfy { $0.starts(with: [0x89, 0x50, 0x4E, 0x47]) })
        }
        #expect(matches("<div class=\"rowtitle\">([^<]*)</div>", in: html).allSatisfy { $0.hasPrefix("clip") && $0.contains("16 mels x 32 frames") })
        #expect(html.contains("Reconstructions of validation clips"))
        let loss = try #require(charts("lines", in: html).first)
        #expect(matches("<text class=\"legend\"[^>]*>([^<]*)</text>", in: loss) == ["train", "validation"])
        #expect(matches("<line class=\"legend\"", in: loss).count == 2, "each name has its line's swatch")
        #expect(matches("<polyline", in: loss).count == 2)
    }

    @Test("with no validation clips the pretraining report shows training clips, says so, and charts the training loss alone")
    func pretrainReportWithoutValidation() throws {
        let folder = try runFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (summary, _) = try tinyPretraining(epochs: 2, in: folder, validationFraction: 0)
        #expect(summary.validationClips == 0)
        let html = try String(contentsOfFile: try #require(summary.report), encoding: .utf8)
        #expect(html.contains("Reconstructions of training clips"))
        #expect(html.contains("No clips were held out for validation"))
        #expect(matches("(<div class=\"row\">.*?</div>)", in: html).count == 3)
        let loss = try #require(charts("lines", in: html).first)
        #expect(matches("<text class=\"legend\"[^>]*>([^<]*)</text>", in: loss) == ["train"])
        #expect(matches("<polyline", in: loss).count == 1, "no empty validation line")
    }

    /// Scripts/report/check_report.py on a report (headless Chromium, console errors, SVG well-formed).
    private func chromiumCheck(_ reports: [String]) throws -> (status: Int32, output: String) {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", root.appendingPathComponent("Scripts/report/check_report.py").path] + reports
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    @Test("headless Chromium renders a fine-tuning report without console errors, and the check fails on a broken page",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"), "needs Debian's chromium at /usr/bin/chromium"))
    func chromiumRendersReport() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("crylab-report-chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        var page = HTMLReport(title: "check")
        page.foldChart(title: "loss", yTitle: "loss", folds: [[3, 2, 1], [2.5, 1.5]])
        page.confusionMatrix([[3, 1], [0, 4]], classNames: ["a", "b"])
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let good = folder.appendingPathComponent("good.html").path
        try page.write(to: good)
        let passed = try chromiumCheck([good, "--png-dir", folder.path])
        #expect(passed.status == 0, "\(passed.output)")

        let broken = folder.appendingPathComponent("broken.html").path
        try page.html.replacingOccurrences(of: "</body>", with: "<script>undefinedFunction()</script></body>")
            .write(toFile: broken, atomically: true, encoding: .utf8)
        let failed = try chromiumCheck([broken, "--png-dir", folder.path])
        #expect(failed.status == 1 && failed.output.contains("undefinedFunction is not defined"), "\(failed.output)")
    }
}
