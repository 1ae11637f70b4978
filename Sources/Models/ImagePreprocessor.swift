import Foundation
import LopCore
import Tensor

/// The pixel pipeline a model's `preprocessor_config.json` describes (transformers' CLIP, LLaVA and
/// LLaVA-OneVision image processors): optional pad to square with the mean colour, resize (shortest edge, or
/// exact size) with Pillow's resampling, centre crop, rescale and normalise, into the vision tower's
/// `[3, height, width]` tensor; for OneVision, AnyRes tiles (the base image, then the grid).
public struct ImagePreprocessor: Sendable, Equatable {
    public enum Resize: Sendable, Equatable {
        case shortestEdge(Int)
        case exact(height: Int, width: Int)
    }

    /// Pillow's resampling filters lop implements (the processors' `resample` codes).
    public enum Resample: Int, Sendable, Equatable {
        case bilinear = 2, bicubic = 3
        var support: Double { self == .bilinear ? 1 : 2 }
        func weight(_ x: Double) -> Double {
            let x = abs(x)
            switch self {
            case .bilinear: return x < 1 ? 1 - x : 0
            case .bicubic:
                let a = -0.5
                if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
                if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
                return 0
            }
        }
    }

    public let file: String
    public let sha256: String
    public let resize: Resize?
    public let resample: Resample
    public let crop: (height: Int, width: Int)?
    public let rescale: Double?
    public let mean: [Double], std: [Double]
    public let normalize: Bool
    public let padToSquare: Bool
    /// LLaVA-OneVision's `image_grid_pinpoints` (nil: one tile per image).
    public let pinpoints: [AnyRes.Resolution]?
    /// Qwen2-VL's dynamic resolution and patching (nil: tiles).
    public let patching: QwenPatching?

    /// Qwen2-VL's image processor (`Qwen2VLImageProcessor`, used by Qwen2.5-VL): the image resized so both sides
    /// are multiples of `patch · merge` with a pixel count inside [minPixels, maxPixels] (`smart_resize`), then cut
    /// into patches flattened channel, frame, row, column, in 2×2 merge blocks, the image repeated on the
    /// `temporal` frames.
    public struct QwenPatching: Sendable, Equatable {
        public let minPixels: Int, maxPixels: Int, patch: Int, temporal: Int, merge: Int

        /// transformers' `smart_resize` (Python's round-half-even in the first step).
        public func size(height: Int, width: Int) throws(ImageError) -> (height: Int, width: Int) {
            let factor = Double(patch * merge)
            guard Double(max(height, width)) / Double(min(height, width)) <= 200 else {
                throw ImageError(file: "(image)", problem: "a \(width)×\(height) image has an aspect ratio above 200, which Qwen2-VL's processor refuses")
            }
            var h = (Double(height) / factor).rounded(.toNearestOrEven) * factor, w = (Double(width) / factor).rounded(.toNearestOrEven) * factor
            if h * w > Double(maxPixels) {
                let beta = (Double(height * width) / Double(maxPixels)).squareRoot()
                h = max(factor, (Double(height) / beta / factor).rounded(.down) * factor)
                w = max(factor, (Double(width) / beta / factor).rounded(.down) * factor)
            } else if h * w < Double(minPixels) {
                let beta = (Double(minPixels) / Double(height * width)).squareRoot()
                h = (Double(height) * beta / factor).rounded(.up) * factor
                w = (Double(width) * beta / factor).rounded(.up) * factor
            }
            return (Int(h), Int(w))
        }
    }

    public static func == (a: ImagePreprocessor, b: ImagePreprocessor) -> Bool { a.sha256 == b.sha256 && a.file == b.file }

    /// Keys that do not change the pixels.
    static let harmless: Set<String> = ["image_processor_type", "processor_class", "feature_extractor_type", "auto_map", "do_convert_rgb",
                                        "data_format", "input_data_format", "default_to_square"]
    static let understood: Set<String> = ["do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                                          "do_normalize", "image_mean", "image_std", "do_pad", "image_grid_pinpoints", "min_pixels", "max_pixels",
                                          "patch_size", "temporal_patch_size", "merge_size"]
    static let onevisionProcessors: Set<String> = ["LlavaOnevisionImageProcessor", "LlavaOnevisionImageProcessorFast", "LlavaOnevisionImageProcessorPil"]
    static let qwenProcessors: Set<String> = ["Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast", "Qwen2VLImageProcessorPil", "Qwen2_5_VLImageProcessor"]
    static let processors: Set<String> = Set(["CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPFeatureExtractor", "LlavaImageProcessor",
                                              "LlavaImageProcessorFast"]).union(onevisionProcessors).union(qwenProcessors)

    public init(file: String) throws(ImageError) {
        guard let data = FileManager.default.contents(atPath: file) else { throw ImageError(file: file, problem: "cannot be read") }
        let json: JSON
        do { json = try JSON.parse(data) } catch { throw ImageError(file: file, problem: "is not valid JSON: \(error)") }
        try self.init(json: json, file: file, sha256: sha256Hex(data))
    }

    public init(json: JSON, file: String, sha256: String = "") throws(ImageError) {
        func fail(_ key: String, _ problem: String) -> ImageError { ImageError(file: file, problem: "\(key): \(problem)") }
        guard let members = json.objectValue else { throw ImageError(file: file, problem: "is not a JSON object") }
        for key in members.keys.sorted() where !Self.harmless.contains(key) && !Self.understood.contains(key) {
            throw fail(key, "is not understood by lop, and it may change the pixels")
        }
        let type = members["image_processor_type"]?.stringValue ?? members["feature_extractor_type"]?.stringValue
        if let type, !Self.processors.contains(type) {
            throw fail("image_processor_type", "\"\(type)\" is not supported (lop implements \(Self.processors.sorted().joined(separator: ", ")))")
        }
        let onevision = type.map(Self.onevisionProcessors.contains) ?? false
        let qwen = type.map(Self.qwenProcessors.contains) ?? false
        for key in ["min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"] where !qwen && members[key] != nil {
            throw fail(key, "is read only by Qwen2-VL's image processor")
        }
        if members["do_convert_rgb"]?.boolValue == false { throw fail("do_convert_rgb", "false is not supported (lop always decodes to RGB)") }
        if let format = members["data_format"], format != .null, format.stringValue != "channels_first" {
            throw fail("data_format", "only channels_first is supported")
        }
        func flag(_ key: String, _ fallback: Bool) throws(ImageError) -> Bool {
            guard let v = members[key], v != .null else { return fallback }
            guard let b = v.boolValue else { throw fail(key, "\(v.serialized()) is not true or false") }
            return b
        }
        func size(_ key: String, _ v: JSON) throws(ImageError) -> (height: Int, width: Int)? {
            if let n = v.intValue, n > 0 { return (n, n) }
            if let h = v["height"]?.intValue, let w = v["width"]?.intValue, h > 0, w > 0 { return (h, w) }
            return nil
        }
        func numbers(_ key: String, _ fallback: [Double]) throws(ImageError) -> [Double] {
            guard let v = members[key], v != .null else { return fallback }
            if let x = v.doubleValue { return [x, x, x] }
            guard let items = v.arrayValue, items.count == 3, case let values = items.compactMap(\.doubleValue), values.count == 3 else {
                throw fail(key, "must be a number or three numbers")
            }
            return values
        }
        self.file = file
        self.sha256 = sha256
        if qwen {
            // Pixel bounds from size {shortest_edge, longest_edge} (transformers 5) or min/max_pixels (the Hub's files).
            func bound(_ key: String, _ sizeKey: String) throws(ImageError) -> Int {
                if let v = members[key], v != .null {
                    guard let n = v.intValue, n > 0 else { throw fail(key, "\(v.serialized()) is not a positive integer") }
                    return n
                }
                guard let n = members["size"]?[sizeKey]?.intValue, n > 0 else { throw fail("size.\(sizeKey)", "is missing (or give \(key))") }
                return n
            }
            func positive(_ key: String, _ fallback: Int) throws(ImageError) -> Int {
                guard let v = members[key], v != .null else { return fallback }
                guard let n = v.intValue, n > 0 else { throw fail(key, "\(v.serialized()) is not a positive integer") }
                return n
            }
            guard try flag("do_resize", true) else { throw fail("do_resize", "false is not supported (patches need sides that are multiples of patch_size · merge_size)") }
            let (low, high) = (try bound("min_pixels", "shortest_edge"), try bound("max_pixels", "longest_edge"))
            guard low <= high else { throw fail("max_pixels", "\(high) is below min_pixels \(low)") }
            patching = QwenPatching(minPixels: low, maxPixels: high, patch: try positive("patch_size", 14), temporal: try positive("temporal_patch_size", 2),
                                    merge: try positive("merge_size", 2))
            resize = nil
        } else if try flag("do_resize", true) {
            patching = nil
            guard let v = members["size"], v != .null else { throw fail("size", "is missing (do_resize is on)") }
            if let edge = v["shortest_edge"]?.intValue, edge > 0 {
                if let longest = v["longest_edge"], longest != .null { throw fail("size.longest_edge", "is not supported") }
                resize = .shortestEdge(edge)
            } else if let exact = try size("size", v) {
                resize = .exact(height: exact.height, width: exact.width)
            } else {
                throw fail("size", "must be {\"shortest_edge\": n}, {\"height\": h, \"width\": w} or n")
            }
        } else {
            patching = nil
            resize = nil
        }
        let code = members["resample"]?.intValue ?? Resample.bicubic.rawValue
        guard let resample = Resample(rawValue: code) else {
            throw fail("resample", "\(code) is not supported (lop implements 2, bilinear, and 3, bicubic)")
        }
        self.resample = resample
        // OneVision's processor crops nothing unless told to; CLIP's crops by default.
        if try flag("do_center_crop", !onevision && !qwen) {
            guard let v = members["crop_size"], v != .null, let c = try size("crop_size", v) else {
                throw fail("crop_size", "must be {\"height\": h, \"width\": w} or n (do_center_crop is on)")
            }
            crop = c
        } else {
            crop = nil
        }
        if try flag("do_rescale", true) {
            guard let factor = members["rescale_factor"]?.doubleValue ?? (members["rescale_factor"] == nil ? 1.0 / 255 : nil), factor > 0 else {
                throw fail("rescale_factor", "is not a positive number")
            }
            rescale = factor
        } else {
            rescale = nil
        }
        normalize = try flag("do_normalize", true)
        mean = try numbers("image_mean", [0.48145466, 0.4578275, 0.40821073])
        std = try numbers("image_std", [0.26862954, 0.26130258, 0.27577711])
        guard std.allSatisfy({ $0 > 0 }) else { throw fail("image_std", "must be positive") }
        if onevision {
            // OneVision's do_pad pads a batch's tile lists to one length, which changes no tile.
            padToSquare = false
            guard case .exact(let h, let w)? = resize, h == w else { throw fail("size", "must be {\"height\": n, \"width\": n} for AnyRes tiles") }
            guard crop == nil else { throw fail("do_center_crop", "is not supported with AnyRes tiles") }
            guard let items = members["image_grid_pinpoints"]?.arrayValue, !items.isEmpty else { throw fail("image_grid_pinpoints", "must be a non-empty list of [height, width] pairs") }
            switch AnyRes.pinpoints(items, tileSize: h) {
            case .success(let points): pinpoints = points
            case .failure(.notAPair(let i, _)), .failure(.notWholeTiles(let i, _, _)):
                throw fail("image_grid_pinpoints[\(i)]", "\(items[i].serialized()) is not a [height, width] pair of whole \(h)-pixel tiles")
            }
        } else if qwen {
            guard crop == nil else { throw fail("do_center_crop", "is not supported with Qwen2-VL's patches") }
            padToSquare = false
            pinpoints = nil
        } else {
            if members["image_grid_pinpoints"] != nil { throw fail("image_grid_pinpoints", "is read only by LLaVA-OneVision's image processor") }
            padToSquare = try flag("do_pad", false)
            pinpoints = nil
        }
    }

    /// An image ready for the vision tower: one tile, or for OneVision the base tile and the AnyRes grid
    /// (`tiled`, an image alone in its row) or one tile padded to a square (an image among several in a row).
    public func prepare(_ image: RGBImage, tiled: Bool = true) throws(ImageError) -> PreparedImage {
        if let patching { return try patches(image, patching) }
        guard let pinpoints, case .exact(let side, _)? = resize else { return PreparedImage(tile: pixels(image), height: image.height, width: image.width) }
        let opaque = image.onWhite()
        guard tiled else {
            let square = Self.padToSquare(opaque, colour: mean.map { UInt8(clamping: Int($0 * 255)) })
            return PreparedImage(tile: tensor(Self.resampled(square, width: side, height: side, filter: resample)), height: image.height, width: image.width)
        }
        let best = AnyRes.bestResolution(pinpoints, height: image.height, width: image.width)
        // transformers' get_patch_output_size: fit inside the pinpoint, the other side rounded up.
        let (scaleW, scaleH) = (Double(best.width) / Double(image.width), Double(best.height) / Double(image.height))
        let (fitHeight, fitWidth) = scaleW < scaleH ? (min(Int((Double(image.height) * scaleW).rounded(.up)), best.height), best.width)
                                                    : (best.height, min(Int((Double(image.width) * scaleH).rounded(.up)), best.width))
        let fitted = Self.resampled(opaque, width: fitWidth, height: fitHeight, filter: resample)
        // Centred on black, the odd pixel of padding at the bottom and right.
        let (top, left) = ((best.height - fitHeight) / 2, (best.width - fitWidth) / 2)
        var canvas = [UInt8](repeating: 0, count: best.height * best.width * 3)
        for y in 0..<fitHeight {
            let source = y * fitWidth * 3, target = ((top + y) * best.width + left) * 3
            canvas.replaceSubrange(target..<(target + fitWidth * 3), with: fitted.pixels[source..<(source + fitWidth * 3)])
        }
        var tiles = [tensor(Self.resampled(opaque, width: side, height: side, filter: resample))]
        for ty in stride(from: 0, to: best.height, by: side) {
            for tx in stride(from: 0, to: best.width, by: side) {
                var tile = [UInt8](repeating: 0, count: side * side * 3)
                for y in 0..<side {
                    let source = ((ty + y) * best.width + tx) * 3
                    tile.replaceSubrange((y * side * 3)..<((y + 1) * side * 3), with: canvas[source..<(source + side * 3)])
                }
                tiles.append(tensor(RGBImage(width: side, height: side, pixels: tile)))
            }
        }
        return PreparedImage(pixels: Tensor(shape: [tiles.count, 3, side, side], data: tiles.flatMap(\.data)), height: image.height, width: image.width)
    }

    /// Qwen2-VL's patches `[gridH · gridW, 3 · temporal · patch²]` of an image, with the grid (1, gridH, gridW).
    func patches(_ image: RGBImage, _ q: QwenPatching) throws(ImageError) -> PreparedImage {
        let size: (height: Int, width: Int)
        do { size = try q.size(height: image.height, width: image.width) } catch { throw ImageError(file: file, problem: error.problem) }
        let pixels = tensor(Self.resampled(image.onWhite(), width: size.width, height: size.height, filter: resample))
        let (p, t, m) = (q.patch, q.temporal, q.merge)
        let (gridH, gridW) = (size.height / p, size.width / p)
        let width = 3 * t * p * p, plane = size.height * size.width
        var out = [Float](repeating: 0, count: gridH * gridW * width)
        var row = 0
        for by in 0..<(gridH / m) { for bx in 0..<(gridW / m) { for my in 0..<m { for mx in 0..<m {
            let (y0, x0) = ((by * m + my) * p, (bx * m + mx) * p)
            var o = row * width
            for c in 0..<3 {
                for _ in 0..<t {
                    for y in 0..<p {
                        let source = c * plane + (y0 + y) * size.width + x0
                        for x in 0..<p { out[o + x] = pixels.data[source + x] }
                        o += p
                    }
                }
            }
            row += 1
        } } } }
        return PreparedImage(pixels: Tensor(shape: [gridH * gridW, width], data: out), height: image.height, width: image.width, grid: [1, gridH, gridW])
    }

    /// The pixel tensor `[3, height, width]` of an image, as one tile.
    public func pixels(_ image: RGBImage) -> Tensor {
        let opaque = image.onWhite()
        var image = padToSquare ? Self.padToSquare(opaque, colour: mean.map { UInt8(clamping: Int($0 * 255)) }) : opaque
        if let resize {
            let (height, width) = Self.outputSize(resize, height: image.height, width: image.width)
            image = Self.resampled(image, width: width, height: height, filter: resample)
        }
        if let crop { image = Self.centreCropped(image, height: crop.height, width: crop.width) }
        return tensor(image)
    }

    /// Rescaled and normalised channels `[3, height, width]` of an image already at the tower's size.
    func tensor(_ image: RGBImage) -> Tensor {
        var values = [Float](repeating: 0, count: image.width * image.height * 3)
        let plane = image.width * image.height
        let scale = rescale ?? 1
        for c in 0..<3 {
            let (m, s) = (Float(mean[c]), Float(std[c]))
            for i in 0..<plane {
                var x = Float(Double(image.pixels[i * 3 + c]) * scale)
                if normalize { x = (x - m) / s }
                values[c * plane + i] = x
            }
        }
        return Tensor(shape: [3, image.height, image.width], data: values)
    }

    /// transformers' shortest-edge rule: the short side becomes `edge`, the long side `int(edge · long / short)`.
    static func outputSize(_ resize: Resize, height: Int, width: Int) -> (height: Int, width: Int) {
        switch resize {
        case .exact(let h, let w): return (h, w)
        case .shortestEdge(let edge):
            let (short, long) = (min(width, height), max(width, height))
            let scaled = Int(Double(edge) * Double(long) / Double(short))
            return width <= height ? (scaled, edge) : (edge, scaled)
        }
    }

    /// LLaVA-1.5's pad to square: the image centred on a square of `colour`.
    static func padToSquare(_ image: RGBImage, colour: [UInt8]) -> RGBImage {
        guard image.width != image.height else { return image }
        let side = max(image.width, image.height)
        var out = [UInt8](repeating: 0, count: side * side * 3)
        for i in 0..<(side * side) { for c in 0..<3 { out[i * 3 + c] = colour[c] } }
        let (top, left) = ((side - image.height) / 2, (side - image.width) / 2)
        for y in 0..<image.height {
            let source = y * image.width * 3, target = ((top + y) * side + left) * 3
            out.replaceSubrange(target..<(target + image.width * 3), with: image.pixels[source..<(source + image.width * 3)])
        }
        return RGBImage(width: side, height: side, pixels: out)
    }

    /// transformers' centre crop: the window starts at `floor((size − crop) / 2)`; where it reaches outside the
    /// image, the image is first centred on a zero frame, offset by `ceil((frame − size) / 2)`.
    static func centreCropped(_ image: RGBImage, height: Int, width: Int) -> RGBImage {
        func floorHalf(_ n: Int) -> Int { n >= 0 ? n / 2 : -((-n + 1) / 2) }
        let (h, w) = (image.height, image.width)
        let (padTop, padLeft) = ((max(h, height) - h + 1) / 2, (max(w, width) - w + 1) / 2)
        let inside = h >= height && w >= width
        let top = floorHalf(h - height) + (inside ? 0 : padTop), left = floorHalf(w - width) + (inside ? 0 : padLeft)
        let (shiftY, shiftX) = inside ? (0, 0) : (padTop, padLeft)
        var out = [UInt8](repeating: 0, count: height * width * 3)
        for y in 0..<height {
            let sy = top + y - shiftY
            guard sy >= 0, sy < h else { continue }
            for x in 0..<width {
                let sx = left + x - shiftX
                guard sx >= 0, sx < w else { continue }
                for c in 0..<3 { out[(y * width + x) * 3 + c] = image.pixels[(sy * w + sx) * 3 + c] }
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// Pillow's `Image.resize` for 8-bit images: separable passes (horizontal then vertical, or the reverse as
    /// below, each only when that side changes) with the filter widened by the scale when shrinking, coefficients in 22-bit fixed point, and
    /// rounding to 8 bits after each pass.
    static func resampled(_ image: RGBImage, width: Int, height: Int, filter: Resample) -> RGBImage {
        var current = image
        // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels as the
        // width does (Resample.c, python-pillow#9549); the order changes the rounding between passes. The rule
        // was confirmed against Pillow 13.0 on 3,000 random sizes, bicubic and bilinear, with no difference.
        if height < image.height && image.height - height > 2 * (image.width - width) {
            current = pass(current, size: height, horizontal: false, filter: filter)
            if width != current.width { current = pass(current, size: width, horizontal: true, filter: filter) }
            return current
        }
        if width != current.width { current = pass(current, size: width, horizontal: true, filter: filter) }
        if height != current.height { current = pass(current, size: height, horizontal: false, filter: filter) }
        return current
    }

    static let precisionBits = 22

    private static func pass(_ image: RGBImage, size outSize: Int, horizontal: Bool, filter: Resample) -> RGBImage {
        let inSize = horizontal ? image.width : image.height
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = filter.support * filterScale
        var bounds: [(start: Int, count: Int)] = [], weights: [[Int]] = []
        for xx in 0..<outSize {
            let centre = (Double(xx) + 0.5) * scale
            let lower = max(Int(centre - support + 0.5), 0), upper = min(Int(centre + support + 0.5), inSize)
            var k = (lower..<max(lower, upper)).map { filter.weight((Double($0) - centre + 0.5) / filterScale) }
            let total = k.reduce(0, +)
            if total != 0 { k = k.map { $0 / total } }
            bounds.append((lower, k.count))
            weights.append(k.map { w in Int(w < 0 ? -0.5 + w * Double(1 << precisionBits) : 0.5 + w * Double(1 << precisionBits)) })
        }
        let (outW, outH) = horizontal ? (outSize, image.height) : (image.width, outSize)
        var out = [UInt8](repeating: 0, count: outW * outH * 3)
        let half = 1 << (precisionBits - 1)
        // Flat coefficient table; the three channels accumulate together (one pass over each source pixel).
        let width = weights.map(\.count).max() ?? 0
        var table = [Int](repeating: 0, count: outSize * width)
        for (j, k) in weights.enumerated() { for (i, w) in k.enumerated() { table[j * width + i] = w } }
        // Source step between neighbouring taps: a pixel (horizontal) or a row (vertical).
        let step = horizontal ? 3 : image.width * 3
        image.pixels.withUnsafeBufferPointer { src in
            table.withUnsafeBufferPointer { k in
                out.withUnsafeMutableBufferPointer { dst in
                    for y in 0..<outH {
                        for x in 0..<outW {
                            let j = horizontal ? x : y
                            let (start, count) = bounds[j]
                            var index = horizontal ? (y * image.width + start) * 3 : (start * image.width + x) * 3
                            var (r, g, b) = (half, half, half)
                            for i in 0..<count {
                                let w = k[j * width + i]
                                r += Int(src[index]) * w
                                g += Int(src[index + 1]) * w
                                b += Int(src[index + 2]) * w
                                index += step
                            }
                            let o = (y * outW + x) * 3
                            dst[o] = UInt8(clamping: r >> precisionBits)
                            dst[o + 1] = UInt8(clamping: g >> precisionBits)
                            dst[o + 2] = UInt8(clamping: b >> precisionBits)
                        }
                    }
                }
            }
        }
        return RGBImage(width: outW, height: outH, pixels: out)
    }
}
