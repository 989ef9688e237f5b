import Foundation

/// Writes 8-bit grayscale or RGB PNG images (uncompressed deflate blocks: no zlib needed; the
/// pictures in reports are small).
public enum PNG {
    /// pixels: [height][width] row-major, one byte (gray) or three bytes (RGB) per pixel.
    public static func encode(width: Int, height: Int, rgb: Bool, pixels: [UInt8]) -> Data {
        let channels = rgb ? 3 : 1
        precondition(pixels.count == width * height * channels, "\(pixels.count) bytes for \(width)x\(height)x\(channels)")
        var raw = [UInt8]()
        raw.reserveCapacity(height * (width * channels + 1))
        for row in 0..<height {
            raw.append(0)  // filter: none
            raw.append(contentsOf: pixels[(row * width * channels)..<((row + 1) * width * channels)])
        }
        var png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = [UInt8]()
        header += bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        header += [8, rgb ? 2 : 0, 0, 0, 0]
        png.append(chunk("IHDR", header))
        png.append(chunk("IDAT", zlibStored(raw)))
        png.append(chunk("IEND", []))
        return png
    }

    /// A spectrogram-like array as a picture: `values` [rows, columns] row-major, low rows at the
    /// bottom, scaled from `range` to a dark-to-bright colour map.
    public static func heatmap(_ values: [Float], rows: Int, columns: Int, range: ClosedRange<Float>) -> Data {
        var pixels = [UInt8](repeating: 0, count: rows * columns * 3)
        let span = max(range.upperBound - range.lowerBound, 1e-12)
        for row in 0..<rows {
            for column in 0..<columns {
                let value = values[row * columns + column]
                let t = value.isFinite ? min(max((value - range.lowerBound) / span, 0), 1) : 0
                let (r, g, b) = colour(t)
                let offset = ((rows - 1 - row) * columns + column) * 3
                pixels[offset] = r
                pixels[offset + 1] = g
                pixels[offset + 2] = b
            }
        }
        return encode(width: columns, height: rows, rgb: true, pixels: pixels)
    }

    /// Dark blue through magenta to yellow, like the common perceptual maps.
    static func colour(_ t: Float) -> (UInt8, UInt8, UInt8) {
        let r = min(1, max(0, 1.6 * t - 0.1)), g = min(1, max(0, 1.8 * t * t)), b = min(1, max(0, 0.45 + 0.9 * t - 1.3 * t * t))
        return (UInt8(r * 255), UInt8(g * 255), UInt8(b * 255))
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    private static func chunk(_ type: String, _ body: [UInt8]) -> Data {
        let typeBytes = Array(type.utf8)
        var data = Data(bigEndian(UInt32(body.count)))
        data.append(contentsOf: typeBytes)
        data.append(contentsOf: body)
        data.append(contentsOf: bigEndian(crc32(typeBytes + body)))
        return data
    }

    private static func zlibStored(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let length = min(65535, bytes.count - offset)
            let final: UInt8 = offset + length >= bytes.count ? 1 : 0
            out.append(final)
            out += [UInt8(length & 0xFF), UInt8(length >> 8), UInt8(~length & 0xFF), UInt8((~length >> 8) & 0xFF)]
            out += bytes[offset..<(offset + length)]
            offset += length
        } while offset < bytes.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in bytes {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return out + bigEndian(b << 16 | a)
    }

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = crcTable[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
