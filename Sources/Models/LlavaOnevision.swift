import Foundation

/// LLaVA-OneVision's AnyRes image handling (`LlavaOnevisionForConditionalGeneration`, read from transformers'
/// `modeling_llava_onevision.py` and `processing_llava_onevision.py`). An image alone in its row becomes a base
/// tile (the whole image resized to one tile) plus a grid of tiles covering the best-fitting pinpoint
/// resolution; the grid's features are laid out as one map, the padding around the image is cut off, a map
/// larger than `maxTiles` tiles' worth (by 10 %) is shrunk by bilinear interpolation, and every row of the map
/// ends with the learned `image_newline`. An image that shares its row with others is one padded tile and gets
/// its features plus one newline.
public struct AnyRes: Equatable, Sendable {
    /// A resolution in pixels, (height, width) as the config lists them.
    public struct Resolution: Equatable, Sendable {
        public let height: Int
        public let width: Int
        public init(height: Int, width: Int) { (self.height, self.width) = (height, width) }
    }

    /// Candidate resolutions (`image_grid_pinpoints`), each a whole number of tiles.
    public var pinpoints: [Resolution]
    /// N of `vision_aspect_ratio` "anyres_max_N".
    public var maxTiles: Int
    /// The tile side in pixels (the vision tower's `image_size`).
    public var tileSize: Int

    /// transformers' default pinpoints: every (h, w) in {384, 768, …, 2304}².
    public static let defaultPinpoints = [384, 768, 1152, 1536, 1920, 2304].flatMap { h in [384, 768, 1152, 1536, 1920, 2304].map { Resolution(height: h, width: $0) } }

    public init(pinpoints: [Resolution], maxTiles: Int, tileSize: Int) {
        (self.pinpoints, self.maxTiles, self.tileSize) = (pinpoints, maxTiles, tileSize)
    }

    /// Reads `image_grid_pinpoints` and `vision_aspect_ratio` (`key` names where they sit, for errors).
    init(pinpoints json: JSON?, aspectRatio: String, tileSize: Int, key: (String) -> String) throws(ModelConfigError) {
        self.tileSize = tileSize
        if let json, json != .null {
            guard let items = json.arrayValue, !items.isEmpty else {
                throw ModelConfigError(key: key("image_grid_pinpoints"), problem: "must be a non-empty list of [height, width] pairs")
            }
            switch Self.pinpoints(items, tileSize: tileSize) {
            case .success(let pinpoints): self.pinpoints = pinpoints
            case .failure(.notAPair(let i, let item)):
                throw ModelConfigError(key: key("image_grid_pinpoints[\(i)]"), problem: "\(item.serialized()) is not a [height, width] pair of positive integers")
            case .failure(.notWholeTiles(let i, let h, let w)):
                throw ModelConfigError(key: key("image_grid_pinpoints[\(i)]"), problem: "[\(h), \(w)] is not a whole number of \(tileSize)-pixel tiles (vision_config.image_size)")
            }
        } else {
            guard Self.defaultPinpoints.allSatisfy({ $0.height % tileSize == 0 && $0.width % tileSize == 0 }) else {
                throw ModelConfigError(key: key("image_grid_pinpoints"), problem: "is missing, and transformers' default pinpoints are not whole \(tileSize)-pixel tiles")
            }
            pinpoints = Self.defaultPinpoints
        }
        let prefix = "anyres_max_"
        guard aspectRatio.hasPrefix(prefix), let n = Int(aspectRatio.dropFirst(prefix.count)), n >= 1 else {
            throw ModelConfigError(key: key("vision_aspect_ratio"), problem: "\"\(aspectRatio)\" is not supported (lop implements \"anyres_max_N\")")
        }
        maxTiles = n
    }

    /// What is wrong with a pinpoint list's entry `index`.
    enum PinpointProblem: Error {
        case notAPair(index: Int, JSON)
        case notWholeTiles(index: Int, height: Int, width: Int)
    }

    /// The `image_grid_pinpoints` entries as resolutions, each a whole number of `tileSize` tiles (the model's
    /// config and the image processor's file read the same list; each words its own errors).
    static func pinpoints(_ items: [JSON], tileSize: Int) -> Result<[Resolution], PinpointProblem> {
        var pinpoints: [Resolution] = []
        for (i, item) in items.enumerated() {
            guard let pair = item.arrayValue, pair.count == 2, let h = pair[0].intValue, let w = pair[1].intValue, h > 0, w > 0 else {
                return .failure(.notAPair(index: i, item))
            }
            guard h % tileSize == 0, w % tileSize == 0 else { return .failure(.notWholeTiles(index: i, height: h, width: w)) }
            pinpoints.append(Resolution(height: h, width: w))
        }
        return .success(pinpoints)
    }

    var pinpointsJSON: JSON { .array(pinpoints.map { JSON.array([.int($0.height), .int($0.width)]) }) }

    /// transformers' `select_best_resolution`: the pinpoint that keeps the most of the image's pixels after
    /// fitting it inside, then the one that wastes the fewest.
    public func bestResolution(height: Int, width: Int) -> Resolution { Self.bestResolution(pinpoints, height: height, width: width) }

    static func bestResolution(_ pinpoints: [Resolution], height: Int, width: Int) -> Resolution {
        var best = pinpoints[0], most = 0, leastWasted = Int.max
        for p in pinpoints {
            let scale = min(Double(p.width) / Double(width), Double(p.height) / Double(height))
            let (w, h) = (Int(Double(width) * scale), Int(Double(height) * scale))
            let effective = min(w * h, width * height)
            let wasted = p.width * p.height - effective
            if effective > most || (effective == most && wasted < leastWasted) {
                (best, most, leastWasted) = (p, effective, wasted)
            }
        }
        return best
    }

    /// Tiles the preprocessor makes for an image alone in its row: the base tile plus the grid.
    public func tileCount(height: Int, width: Int) -> Int {
        let best = bestResolution(height: height, width: width)
        return (best.height / tileSize) * (best.width / tileSize) + 1
    }

    /// One feature of the packed map: a mix of grid features (indices counted over the grid tiles, tile-major,
    /// row-major inside a tile), or the newline that ends a row.
    public enum Packed {
        case mix([(index: Int, weight: Float)])
        case newline
    }

    /// The grid features of an image alone in its row, after the base tile's, for a tower of `side`×`side`
    /// patches per tile.
    public func packing(height: Int, width: Int, side: Int) -> [Packed] {
        let (columns, top, left, rows, cols, outRows, outCols) = map(height: height, width: width, side: side)
        func index(_ y: Int, _ x: Int) -> Int {
            let (y, x) = (y + top, x + left)
            return ((y / side) * columns + x / side) * side * side + (y % side) * side + (x % side)
        }
        let ys = Self.bilinearTaps(input: rows, output: outRows), xs = Self.bilinearTaps(input: cols, output: outCols)
        var packed: [Packed] = []
        packed.reserveCapacity(outRows * (outCols + 1))
        for y in ys {
            for x in xs {
                var mix: [(index: Int, weight: Float)] = []
                for (yi, yw) in y where yw != 0 {
                    for (xi, xw) in x where xw != 0 { mix.append((index(yi, xi), yw * xw)) }
                }
                packed.append(.mix(mix))
            }
            packed.append(.newline)
        }
        return packed
    }

    /// Image tokens (features) of an image alone in its row: the base tile's plus the packed map's.
    public func featureCount(height: Int, width: Int, side: Int) -> Int {
        let map = map(height: height, width: width, side: side)
        return side * side + map.outRows * (map.outCols + 1)
    }

    /// The grid's feature map for an image: tile columns, the unpadded window (top, left, rows, columns) and
    /// its size after `anyres_max_N` — what both the packing and the processor's token count follow.
    func map(height: Int, width: Int, side: Int) -> (columns: Int, top: Int, left: Int, rows: Int, cols: Int, outRows: Int, outCols: Int) {
        let best = bestResolution(height: height, width: width)
        let columns = best.width / tileSize
        let (top, left, rows, cols) = Self.unpadded(height: height, width: width, mapHeight: best.height / tileSize * side, mapWidth: columns * side)
        let (outRows, outCols) = shrunk(rows: rows, cols: cols, side: side)
        return (columns, top, left, rows, cols, outRows, outCols)
    }

    /// transformers' `unpad_image`: the part of the feature map the image covers after it was fitted into the
    /// pinpoint and centred, as (top, left, rows, columns).
    static func unpadded(height: Int, width: Int, mapHeight: Int, mapWidth: Int) -> (Int, Int, Int, Int) {
        // int(round(x, 7)), in transformers' order of operations.
        func rounded(_ x: Double) -> Int { Int((x * 1e7).rounded(.toNearestOrEven) / 1e7) }
        if Double(width) / Double(height) > Double(mapWidth) / Double(mapHeight) {
            let newHeight = rounded(Double(height) * (Double(mapWidth) / Double(width)))
            let padding = (mapHeight - newHeight) / 2
            return (padding, 0, mapHeight - 2 * padding, mapWidth)
        }
        let newWidth = rounded(Double(width) * (Double(mapHeight) / Double(height)))
        let padding = (mapWidth - newWidth) / 2
        return (0, padding, mapHeight, mapWidth - 2 * padding)
    }

    /// The map's size after `anyres_max_N`: shrunk when it holds more than 1.1² × N tiles' worth of features.
    func shrunk(rows: Int, cols: Int, side: Int) -> (Int, Int) {
        let ratio = (Double(rows * cols) / Double(maxTiles * side * side)).squareRoot()
        guard ratio > 1.1 else { return (rows, cols) }
        return (Int((Double(rows) / ratio).rounded(.down)), Int((Double(cols) / ratio).rounded(.down)))
    }

    /// PyTorch's bilinear `interpolate` (align_corners false) along one axis: each output index's two source
    /// indices and weights, computed in Float as PyTorch does.
    static func bilinearTaps(input: Int, output: Int) -> [[(Int, Float)]] {
        let scale = Float(input) / Float(output)
        return (0..<output).map { d in
            let source = max(scale * (Float(d) + 0.5) - 0.5, 0)
            let i0 = min(Int(source), input - 1)
            let i1 = i0 < input - 1 ? i0 + 1 : i0
            let l1 = source - Float(i0)
            return i1 == i0 ? [(i0, Float(1))] : [(i0, 1 - l1), (i1, l1)]
        }
    }
}
