import CJPEG
import CPNG
import Foundation
import LopCore

/// An 8-bit RGB image, rows top to bottom, `[height, width, 3]`, with the file's alpha when it has one.
public struct RGBImage: Equatable, Sendable {
    public let width, height: Int
    public let pixels: [UInt8]
    /// One value per pixel (nil: opaque).
    public let alpha: [UInt8]?

    public init(width: Int, height: Int, pixels: [UInt8], alpha: [UInt8]? = nil) {
        precondition(pixels.count == width * height * 3, "RGB pixels must be width·height·3 bytes")
        precondition(alpha.map { $0.count == width * height } ?? true, "one alpha value per pixel")
        self.width = width
        self.height = height
        self.pixels = pixels
        self.alpha = alpha
    }

    /// The image over opaque white, as transformers' RGB conversion makes it (Pillow's `alpha_composite`, in its
    /// integer arithmetic: 7 extra bits, divisions by 255 rounded).
    public func onWhite() -> RGBImage {
        guard let alpha else { return self }
        var out = pixels
        for i in 0..<(width * height) where alpha[i] != 255 {
            let a = UInt32(alpha[i])
            guard a > 0 else { out[i * 3] = 255; out[i * 3 + 1] = 255; out[i * 3 + 2] = 255; continue }
            let (coef1, coef2) = (a << 7, (255 - a) << 7)
            for c in 0..<3 {
                let t = UInt32(pixels[i * 3 + c]) * coef1 + 255 * coef2 + (0x80 << 7)
                out[i * 3 + c] = UInt8((((t >> 8) + t) >> 8) >> 7)
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }
}

/// An image file that cannot be used: unreadable, not PNG or JPEG, corrupt, or over the pixel limit.
public struct ImageError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let problem: String
    public var description: String { "\(file): \(problem)" }
}

extension ImageError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}

/// PNG and JPEG decoding through libpng and libjpeg(-turbo), for untrusted files: every decoder error comes back as
/// an `ImageError` naming the file, and an image over the pixel limit is refused from its header, before decoding.
public enum ImageFile {
    /// Pixels an image may have unless configured otherwise (a 6000 × 6000 photograph; 108 MB decoded).
    public static let defaultMaximumPixels = 36_000_000

    public static func decode(file: String, maximumPixels: Int = defaultMaximumPixels) throws(ImageError) -> RGBImage {
        guard let data = FileManager.default.contents(atPath: file) else { throw ImageError(file: file, problem: "cannot be read") }
        return try decode(data, name: file, maximumPixels: maximumPixels)
    }

    /// Decodes PNG or JPEG bytes, recognised by their signature (not by a file name).
    public static func decode(_ data: Data, name: String, maximumPixels: Int = defaultMaximumPixels) throws(ImageError) -> RGBImage {
        let bytes = [UInt8](data)
        let isPNG = bytes.starts(with: [0x89, 0x50, 0x4E, 0x47])
        guard isPNG || bytes.starts(with: [0xFF, 0xD8, 0xFF]) else {
            throw ImageError(file: name, problem: "is neither a PNG nor a JPEG file")
        }
        var pixels: UnsafeMutablePointer<UInt8>? = nil
        var (width, height): (UInt32, UInt32) = (0, 0)
        var message = [CChar](repeating: 0, count: 256)
        var channels: Int32 = 3
        let status = bytes.withUnsafeBufferPointer { buffer in
            isPNG ? lop_png_decode(buffer.baseAddress, buffer.count, UInt64(max(maximumPixels, 0)), &pixels, &width, &height, &channels, &message)
                  : lop_jpeg_decode(buffer.baseAddress, buffer.count, UInt64(max(maximumPixels, 0)), &pixels, &width, &height, &channels, &message)
        }
        defer { free(pixels) }
        let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard status == 0, let pixels else {
            throw ImageError(file: name, problem: status == 2 ? "\(text) (data.max_image_pixels)" : "is not a valid \(isPNG ? "PNG" : "JPEG") file: \(text)")
        }
        let count = Int(width) * Int(height)
        let decoded = UnsafeBufferPointer(start: pixels, count: count * Int(channels))
        guard channels == 4 else { return RGBImage(width: Int(width), height: Int(height), pixels: Array(decoded)) }
        var rgb = [UInt8](repeating: 0, count: count * 3), alpha = [UInt8](repeating: 0, count: count)
        for i in 0..<count {
            rgb[i * 3] = decoded[i * 4]
            rgb[i * 3 + 1] = decoded[i * 4 + 1]
            rgb[i * 3 + 2] = decoded[i * 4 + 2]
            alpha[i] = decoded[i * 4 + 3]
        }
        return RGBImage(width: Int(width), height: Int(height), pixels: rgb, alpha: alpha)
    }

    /// PNG bytes of an RGB image (libpng's simplified writer).
    public static func png(_ image: RGBImage) throws(ImageError) -> Data {
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = image.pixels.withUnsafeBufferPointer { lop_png_encode($0.baseAddress, UInt32(image.width), UInt32(image.height), 3, &out, &size, &message) }
        defer { free(out) }
        guard status == 0, let out else {
            throw ImageError(file: "(PNG encoder)", problem: String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return Data(bytes: out, count: size)
    }
}
