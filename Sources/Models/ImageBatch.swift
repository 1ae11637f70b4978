import Foundation
import Tensor

/// One preprocessed image: its tiles `[tiles, channels, size, size]` (one for LLaVA; the base image and the
/// AnyRes grid for LLaVA-OneVision) and the size of the image they came from.
public struct PreparedImage: Sendable {
    public let pixels: Tensor
    public let height: Int
    public let width: Int

    public init(pixels: Tensor, height: Int, width: Int) {
        precondition(pixels.shape.count == 4, "tiles are [tiles, channels, height, width]")
        (self.pixels, self.height, self.width) = (pixels, height, width)
    }

    /// A single tile `[channels, size, size]`.
    public init(tile: Tensor, height: Int, width: Int) {
        self.init(pixels: tile.reshaped([1] + tile.shape), height: height, width: width)
    }

    public var layout: ImageBatch.Layout { ImageBatch.Layout(tiles: pixels.shape[0], height: height, width: width) }
}

/// The images of a token batch, in the order their image tokens appear (row by row): every tile stacked, and
/// each image's tile count and original size.
public struct ImageBatch: Sendable {
    public struct Layout: Equatable, Sendable {
        public let tiles: Int
        public let height: Int
        public let width: Int
        public init(tiles: Int, height: Int, width: Int) { (self.tiles, self.height, self.width) = (tiles, height, width) }
    }

    /// `[all tiles, channels, size, size]`.
    public let pixels: Tensor
    public let layouts: [Layout]

    public init(_ images: [PreparedImage]) {
        precondition(!images.isEmpty, "an image batch holds images")
        let tile = Array(images[0].pixels.shape.dropFirst())
        precondition(images.allSatisfy { Array($0.pixels.shape.dropFirst()) == tile }, "every tile has one shape")
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
