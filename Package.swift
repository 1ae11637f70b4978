// swift-tools-version:6.0
// lop: on-demand structured pruning of multimodal LLMs (LOP), run as a PostgreSQL-backed job queue.
import Foundation
import PackageDescription

/// The Tensor target's vector code (exp, softmax, SiLU, norms) is compiled for AVX2 + FMA when the building
/// machine has them: eight float lanes per instruction instead of four make the passes between BLAS calls
/// about twice as fast. `LOP_PORTABLE=1` builds for any x86-64 (for binaries copied to older machines).
let vectorFlags: [String] = {
    #if arch(x86_64) && os(Linux)
    guard ProcessInfo.processInfo.environment["LOP_PORTABLE"] != "1",
          let cpu = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flags = cpu.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
          ["avx2", "fma", "bmi2", "f16c"].allSatisfy({ flags.split(separator: " ").contains(Substring($0)) })
    else { return [] }
    return ["-target-cpu", "haswell"]
    #else
    return []
    #endif
}()

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "lop",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lop", targets: ["lop"]),
        .executable(name: "lop-worker", targets: ["lop-worker"]),
        .executable(name: "lop-notifier", targets: ["lop-notifier"]),
        .library(name: "Store", targets: ["Store"]),
        .library(name: "LopConfig", targets: ["LopConfig"]),
        .library(name: "Tensor", targets: ["Tensor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // C libraries, linked through their Debian pkg-config names.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // Image decoders for untrusted files: their longjmp-based errors are caught in the shims' C.
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg62-turbo-dev"])]),

        // What every module shares: lop's version, the LopError protocol and exit statuses, the one SHA-256 hex form.
        .target(name: "LopCore", dependencies: [.product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        .target(
            name: "LopConfig",
            dependencies: ["LopCore", .product(name: "Yams", package: "Yams"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // Numeric kernels are optimised in debug builds too: tests train and evaluate real models with them.
        .target(
            name: "Tensor", dependencies: ["COpenBLAS"],
            swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug)), .unsafeFlags(vectorFlags)]
        ),
        // A small Llama-shaped Transformer built from the engine's ops alone: the tensor benchmark's workload and the
        // engine's training tests' (which so build Tensor and this, not the whole graph).
        .target(name: "TensorWorkloads", dependencies: ["Tensor"], swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // safetensors, Hugging Face configs, Llama / CLIP-ViT / LLaVA architectures, tokenizers, images, token data.
        .target(name: "Models", dependencies: ["Tensor", "LopCore", "CPNG", "CJPEG"], swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // Loss, perplexity and answer accuracy; calibration sets; comparison reports.
        .target(name: "Evaluation", dependencies: ["Models", "Tensor", "LopCore", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // The fixture models' data, training recipes and model cards.
        .target(name: "Fixtures", dependencies: ["Models", "Evaluation", "Pruning", "Tensor"], swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // Prunable units, budgets and their exact projection, importance, nested models, allocation baselines.
        .target(name: "Pruning", dependencies: ["Models", "Evaluation", "Tensor", "LopCore", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // LOP's Monte Carlo tree search over layer-wise keep ratios.
        .target(name: "Search", dependencies: ["Pruning", "Evaluation", "Models", "Tensor", "LopCore"], swiftSettings: strict),
        // LOP's predictor: an autoregressive Transformer from a budget to layer-wise keep ratios.
        .target(name: "Predictor", dependencies: ["Pruning", "Models", "Tensor", "LopCore", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // Deployable variants: GGUF for llama.cpp, plain and padded Hugging Face folders.
        .target(name: "Export", dependencies: ["Models", "Tensor", "LopCore"], swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // Workloads and tables behind `lop bench`.
        .target(name: "Webhooks", dependencies: ["CCurl", "Store", "LopCore", .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(name: "Benchmarks", dependencies: ["Tensor", "TensorWorkloads", "COpenBLAS", "Queue", "Jobs", "Store", "Models", "Evaluation", "Pruning", "Search", "Predictor", "Webhooks", "Fixtures", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(
            name: "Store",
            dependencies: [
                "CLibPQ", "LopCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Queue",
            dependencies: ["Store", "LopCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // The executables' shared edge: the configuration mapped onto each module's settings, one logging
        // bootstrap, one exit path for lop's errors, shutdown signals.
        .target(name: "Bootstrap", dependencies: ["LopConfig", "LopCore", "Store", "Queue", "Webhooks", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(name: "Jobs", dependencies: ["Queue", "Store", "LopConfig", "LopCore", "Search", "Pruning", "Evaluation", "Fixtures", "Models", "Predictor", "Webhooks", "Export", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        .executableTarget(
            name: "lop-worker",
            dependencies: [
                "Bootstrap", "Jobs", "Queue", "Search", "Store", "LopConfig", "LopCore", "Tensor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Workers/lop-worker",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "lop-notifier",
            dependencies: [
                "Bootstrap", "Webhooks", "Store", "LopConfig", "LopCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Workers/lop-notifier",
            swiftSettings: strict
        ),
        // The dashboard, its JSON API and /metrics: an HTTP server over the same PostgreSQL.
        .target(
            name: "Web",
            dependencies: [
                "Store", "Queue", "Webhooks", "LopCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "lop",
            dependencies: [
                "Bootstrap", "LopConfig", "LopCore", "Store", "Tensor", "Benchmarks", "Queue", "Jobs", "Models", "Fixtures", "Pruning", "Evaluation", "Search", "Predictor", "Webhooks", "Export", "Web",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Shared by test targets: a throwaway PostgreSQL cluster and per-test databases.
        .target(name: "TestSupport", dependencies: ["Store", "Queue", "Models", "Tensor", "Fixtures"], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "LopConfigTests", dependencies: ["LopConfig", "Bootstrap", "Queue", "Webhooks"], swiftSettings: strict),
        .testTarget(name: "StoreTests", dependencies: ["Store", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TensorWorkloads"], swiftSettings: strict),
        .testTarget(name: "QueueTests", dependencies: ["Queue", "Jobs", "Evaluation", "Store", "LopConfig", "Pruning", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CLITests", dependencies: ["lop", "lop-worker", "Queue", "Store", "Models", "Tensor", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Tensor", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "FixturesTests", dependencies: ["Fixtures", "Evaluation", "Models", "Tensor", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "PruningTests", dependencies: ["Pruning", "Evaluation", "Fixtures", "Models", "Tensor", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "SearchTests", dependencies: ["Search", "Jobs", "Queue", "Store", "Pruning", "Evaluation", "Fixtures", "Models", "Tensor", "LopConfig", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "PredictorTests", dependencies: ["Predictor", "Search", "Jobs", "Pruning", "Evaluation", "Models", "Tensor", "LopConfig", "Store", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "WebhooksTests", dependencies: ["Webhooks", "LopCore", "Store", "Queue", "LopConfig", "TestSupport", "lop", "lop-notifier", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "RegistryTests", dependencies: ["Jobs", "Evaluation", "Fixtures", "Queue", "Store", "Webhooks", "Models", "Pruning", "Predictor", "LopConfig", "TestSupport", "lop", "lop-worker"], swiftSettings: strict),
        .testTarget(name: "ExportTests", dependencies: ["Export", "Models", "Pruning", "Tensor", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "WebTests", dependencies: ["Web", "Jobs", "Queue", "Store", "Webhooks", "LopConfig", "TestSupport", "lop"], swiftSettings: strict),
        .testTarget(name: "ShimTests", dependencies: ["COpenBLAS", "CCurl", "CLibPQ", "CPNG", "CJPEG"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
