// A vectorised exp: softmax and SiLU evaluate millions of exponentials per forward pass, and libm's expf one at
// a time would otherwise take most of the time not spent in BLAS.

/// e^x for eight lanes: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two parts for accuracy), e^r by a degree-6
/// polynomial, 2^n put in the exponent bits. Relative error below 2e-7; underflows to 0 below −87.3 and
/// overflows to +∞ above 88.7, like expf.
@inline(__always)
func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    var clamped = x
    clamped.replace(with: -87.33, where: x .< -87.33)
    clamped.replace(with: 88.72, where: x .> 88.72)
    clamped.replace(with: 0, where: x .!= x)
    // Adding 1.5·2²³ rounds to the nearest integer in the low mantissa bits: n as a float and as an integer
    // without a (slow, generic) SIMD conversion.
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let shifted = clamped * 1.442_695_04 + magic
    let n = shifted - magic
    let whole = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
    var r = clamped - n * 0.693_145_75
    r = r - n * 1.428_606_8e-6
    // Taylor coefficients of e^r up to r⁶ (error ≤ (ln2/2)⁷/7! ≈ 1.2e-7 relative).
    var p = SIMD8<Float>(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    // 2^n as two factors 2^(n/2)·2^(n − n/2), each a normal float, so n = 128 or −127 stays exact.
    let half = whole &>> 1
    let scale1 = unsafeBitCast((half &+ 127) &<< 23, to: SIMD8<Float>.self)
    let scale2 = unsafeBitCast((whole &- half &+ 127) &<< 23, to: SIMD8<Float>.self)
    var result = p * scale1 * scale2
    result.replace(with: 0, where: x .< -87.33)
    result.replace(with: Float.infinity, where: x .> 88.72)
    result.replace(with: Float.nan, where: x .!= x)
    return result
}

/// e^x for one value, through the same approximation as `exp8` (so vector bodies and scalar tails agree).
@inline(__always)
func fastExp(_ x: Float) -> Float {
    exp8(SIMD8(repeating: x))[0]
}

/// p[i] = e^(p[i] − shift) for i in 0..<count; returns the sum (in Float, as softmax needs it).
@inline(__always)
func expInPlace(_ p: UnsafeMutablePointer<Float>, count: Int, shift: Float = 0) -> Float {
    var i = 0
    var total = SIMD8<Float>(repeating: 0)
    let raw = UnsafeMutableRawPointer(p)
    while i + 8 <= count {
        let v = exp8(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - shift)
        raw.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
        total += v
        i += 8
    }
    var sum = total.sum()
    while i < count {
        p[i] = fastExp(p[i] - shift)
        sum += p[i]
        i += 1
    }
    return sum
}

/// Σ p[i]² over `count` values, in eight lanes (a scalar loop does not vectorise: float addition is not associative).
@inline(__always)
func sumOfSquares(_ p: UnsafePointer<Float>, count: Int) -> Float {
    var lanes = SIMD8<Float>(repeating: 0)
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 8 <= count {
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        lanes += v * v
        i += 8
    }
    var sum = lanes.sum()
    while i < count { sum += p[i] * p[i]; i += 1 }
    return sum
}

/// max of p[0..<count] (−∞ when empty), in eight lanes.
@inline(__always)
func maximum(_ p: UnsafePointer<Float>, count: Int) -> Float {
    var lanes = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 8 <= count {
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        lanes.replace(with: v, where: v .> lanes)
        i += 8
    }
    var result = lanes.max()
    while i < count { result = max(result, p[i]); i += 1 }
    return result
}
