import Foundation
import Tensor

/// One preprocessed image: its tiles `[tiles, channels, size, size]` (one for LLaVA; the base image and the
/// AnyRes grid for LLaVA-OneVision) or Qwen2.5-VL's flattened patches `[patches, channels·temporal·patch²]` with
/// their grid, and the size of the image they came from.
public struct PreparedImage: Sendable {
    public let pixels: Tensor
    public let height: Int
    public let width: Int
    /// Qwen2.5-VL's (temporal, height, width) patch grid (nil for tiles).
    public let grid: [Int]?

    public init(pixels: Tensor, height: Int, width: Int, grid: [Int]? = nil) {
        precondition(pixels.shape.count == (grid == nil ? 4 : 2), "tiles are [tiles, channels, height, width], patches [patches, width]")
        precondition(grid.map { $0.count == 3 && $0.reduce(1, *) == pixels.shape[0] } ?? true, "one patch per grid cell")
        (self.pixels, self.height, self.width, self.grid) = (pixels, height, width, grid)
    }

    /// A single tile `[channels, size, size]`.
    public init(tile: Tensor, height: Int, width: Int) {
        self.init(pixels: tile.reshaped([1] + tile.shape), height: height, width: width)
    }

    public var layout: ImageBatch.Layout { ImageBatch.Layout(tiles: pixels.shape[0], height: height, width: width, grid: grid) }
}

/// The images of a token batch, in the order their image tokens appear (row by row): every tile (or patch)
/// stacked, and each image's tile count, original size and patch grid.
public struct ImageBatch: Sendable {
    public struct Layout: Equatable, Sendable {
        /// Tiles, or patches when `grid` is set.
        public let tiles: Int
        public let height: Int
        public let width: Int
        public let grid: [Int]?
        public init(tiles: Int, height: Int, width: Int, grid: [Int]? = nil) { (self.tiles, self.height, self.width, self.grid) = (tiles, height, width, grid) }
    }

    /// `[all tiles, channels, size, size]` or `[all patches, patch width]`.
    public let pixels: Tensor
    public let layouts: [Layout]

    public init(_ images: [PreparedImage]) {
        precondition(!images.isEmpty, "an image batch holds images")
        let tile = Array(images[0].pixels.shape.dropFirst())
        precondition(images.allSatisfy { Array($0.pixels.shape.dropFirst()) == tile && ($0.grid == nil) == (images[0].grid == nil) }, "every tile has one shape")
        let tiles = images.reduce(0) { $0 + $1.pixels.shape[0] }
        pixels = Tensor(shape: [tiles] + tile, data: images.flatMap(\.pixels.data))
        layouts = images.map(\.layout)
    }

    /// Images of one tile each, `[images, channels, size, size]`, whose original size does not matter (LLaVA).
    public init(tiles: Tensor) {
        precondition(tiles.shape.count == 4, "images are [images, channels, height, width]")
        pixels = tiles
        layouts = Array(repeating: Layout(tiles: 1, height: tiles.shape[2], width: tiles.shape[3]), count: tiles.shape[0])
    }

    public var count: Int { layouts.count }

    /// Whether any image has more than one tile (only then do the original sizes change what a model computes).
    public var isTiled: Bool { layouts.contains { $0.tiles > 1 } }
}

/// Projected image features `[features, textHidden]` of a batch's images, and each image's share of the rows.
public struct ImageFeatures {
    public let value: Value
    public let counts: [Int]
    public init(value: Value, counts: [Int]) {
        precondition(value.shape.count == 2 && value.shape[0] == counts.reduce(0, +), "one feature row per image token")
        (self.value, self.counts) = (value, counts)
    }
}

extension ImageFeatures {
    /// Text embeddings `[rows, length, hidden]` with the image tokens replaced by image features: each row's
    /// image tokens, in order, take the next images' features whole (a row's image tokens must add up to whole
    /// images), as transformers' `masked_scatter` fills them.
    public static func fill(_ g: Graph, text: Value, tokens: [[Int]], imageToken: Int, features: ImageFeatures?) throws -> Value {
        let (length, hidden) = (tokens.first?.count ?? 0, text.shape[2])
        let counts = features?.counts ?? []
        let starts = counts.reduce(into: [0]) { $0.append($0.last! + $1) }
        var rows: [Value] = [], image = 0
        for (b, row) in tokens.enumerated() {
            let positions = row.indices.filter { row[$0] == imageToken }
            let textRow = g.slice(text, axis: 0, b..<(b + 1))
            guard !positions.isEmpty else {
                rows.append(textRow)
                continue
            }
            var need = positions.count
            let first = image
            while need > 0, image < counts.count {
                need -= counts[image]
                image += 1
            }
            guard need == 0, let features else {
                let given = counts[first..<image].reduce(0, +)
                throw ModelInputError(problem: image == first ? "row \(b) has \(positions.count) image tokens (id \(imageToken)) but no image is left for it"
                                      : "row \(b) has \(positions.count) image tokens (id \(imageToken)); its images \(first)..<\(image) give \(given) features")
            }
            let imageRows = g.slice(features.value, axis: 0, starts[first]..<starts[image])
            // Runs of consecutive image positions take consecutive feature rows.
            var parts: [Value] = [], cursor = 0, used = 0, k = 0
            while k < positions.count {
                var end = k
                while end + 1 < positions.count, positions[end + 1] == positions[end] + 1 { end += 1 }
                let (start, run) = (positions[k], end - k + 1)
                if start > cursor { parts.append(g.slice(textRow, axis: 1, cursor..<start)) }
                parts.append(g.reshape(g.slice(imageRows, axis: 0, used..<(used + run)), [1, run, hidden]))
                (cursor, used, k) = (start + run, used + run, end + 1)
            }
            if cursor < length { parts.append(g.slice(textRow, axis: 1, cursor..<length)) }
            rows.append(parts.count == 1 ? parts[0] : g.concat(parts, axis: 1))
        }
        guard image == counts.count else {
            throw ModelInputError(problem: "\(counts.count) images were given but the rows' image tokens take \(image)")
        }
        return rows.count == 1 ? rows[0] : g.concat(rows, axis: 0)
    }
}
