import Foundation
import LopCore
import Pruning
import Tensor

/// One strategy the search scored: what `lop.samples` stores and the predictor learns from.
public struct SearchSample: Sendable, Equatable, Codable {
    /// Realised keep ratios (sizes over widths) and the integer sizes they come from.
    public let ratios: [Double]
    public let sizes: [Int]
    public let score: StrategyScore
    public let reward: Double
    /// Tree depth of the node (0: the uniform root).
    public let depth: Int
    /// Whether the evaluation ran now (false: an equal strategy's score was looked up).
    public let computed: Bool
}

/// A scored strategy as results report it (a search's best and uniform, a sweep's per budget): the keep ratios,
/// the integer sizes, the share of the units' parameters they keep, and the score.
public struct ScoredStrategy: Codable, Sendable, Equatable {
    public let strategy: [Double]
    public let sizes: [Int]
    public let loss: Double
    public let accuracy: Double
    public let reward: Double
    public let keptFraction: Double

    public init(_ sample: SearchSample, units: [PrunableUnit]) {
        (strategy, sizes, loss, accuracy, reward) = (sample.ratios, sample.sizes, sample.score.loss, sample.score.accuracy, sample.reward)
        keptFraction = Projection.keptFraction(sample.sizes, units: units)
    }

    enum CodingKeys: String, CodingKey { case strategy, sizes, loss, accuracy, reward, keptFraction = "kept_fraction" }
}

/// What a search found and what it cost.
public struct SearchResult: Sendable, Codable {
    public let best: SearchSample
    public let uniform: SearchSample
    public let simulations: Int
    /// Nodes in the tree, and children dropped by successive halving's screen.
    public let nodes: Int
    public let screenedOut: Int
    public let counters: StrategyEvaluator.Counters
    public let seconds: Double
}

/// LOP's Monte Carlo tree search over layer-wise keep ratios. A node is a whole strategy; the root is uniform
/// at the budget. Selection follows UCT; a leaf visited `expand_after` times gets `children` children, each
/// perturbing every ratio of its parent by U(−δ, δ) with δ shrinking with depth, then projected back onto the
/// budget with exact integer sizes. A node's reward is its strategy's score relative to the uniform one. The
/// answer is the best strategy evaluated. Deterministic for a seed.
public final class TreeSearch {
    struct Node {
        let ratios: [Double]
        let sizes: [Int]
        let depth: Int
        var children: [Int] = []
        var visits = 0
        var totalReward = 0.0
        var sample: SearchSample?
    }

    public let evaluator: StrategyEvaluator
    public let budget: Budget
    public let bounds: KeepBounds
    public let settings: SearchSettings
    private var nodes: [Node] = []
    private var generator: SeededGenerator
    private var uniformScore: StrategyScore?
    private var screenedOut = 0

    public init(evaluator: StrategyEvaluator, budget: Budget, bounds: KeepBounds = KeepBounds(), settings: SearchSettings = SearchSettings()) {
        self.evaluator = evaluator
        self.budget = budget
        self.bounds = bounds
        self.settings = settings
        generator = SeededGenerator(seed: UInt64(settings.seed) &+ 0x5EA2C4)
    }

    var units: [PrunableUnit] { evaluator.pruner.units }

    /// Runs the search. `sample` receives every evaluated node in order; `progress` the simulations done;
    /// `checkStop` may throw to stop the search (cancellation) between simulations.
    public func run(sample: (SearchSample) throws -> Void = { _ in }, progress: (Int, Int) -> Void = { _, _ in },
                    checkStop: () throws -> Void = {}) throws -> SearchResult {
        let start = Date()
        let fraction = try budget.fraction(of: units)
        let rootSizes = try Projection.project(ratios: Array(repeating: fraction, count: units.count), units: units, budget: budget, bounds: bounds)
        nodes = [Node(ratios: realised(rootSizes), sizes: rootSizes, depth: 0)]
        try evaluate(0, emit: sample)
        backpropagate([0])
        var simulations = 1
        progress(simulations, settings.simulations)
        while simulations < settings.simulations {
            try checkStop()
            var path = [0]
            while !nodes[path.last!].children.isEmpty { path.append(select(path.last!)) }
            var leaf = path.last!
            if nodes[leaf].sample != nil, nodes[leaf].visits >= settings.expandAfter {
                try expand(leaf)
                if let first = nodes[leaf].children.first {
                    leaf = first
                    path.append(leaf)
                }
            }
            if nodes[leaf].sample == nil { try evaluate(leaf, emit: sample) }
            backpropagate(path)
            simulations += 1
            progress(simulations, settings.simulations)
        }
        let evaluated = nodes.compactMap(\.sample)
        let best = evaluated.enumerated().max { a, b in a.element.reward != b.element.reward ? a.element.reward < b.element.reward : a.offset > b.offset }!.element
        return SearchResult(best: best, uniform: nodes[0].sample!, simulations: simulations, nodes: nodes.count, screenedOut: screenedOut,
                            counters: evaluator.counters, seconds: Date().timeIntervalSince(start))
    }

    /// The child with the highest UCT value; an unvisited child first.
    func select(_ parent: Int) -> Int {
        let children = nodes[parent].children
        if let fresh = children.first(where: { nodes[$0].visits == 0 }) { return fresh }
        let logParent = log(Double(nodes[parent].visits))
        func uct(_ c: Int) -> Double {
            let n = Double(nodes[c].visits)
            return nodes[c].totalReward / n + settings.exploration * (logParent / n).squareRoot()
        }
        return children.max { uct($0) < uct($1) }!
    }

    /// Adds the leaf's children: perturbed, clipped, projected; with successive halving, only the better half
    /// of them on the screening slice.
    func expand(_ leaf: Int) throws {
        let parent = nodes[leaf]
        let delta = max(settings.initialDelta * pow(settings.deltaDecay, Double(parent.depth)), settings.minimumDelta)
        var candidates: [Node] = []
        for _ in 0..<settings.children {
            let proposed = parent.ratios.map { r in
                min(max(r + (delta > 0 ? Double.random(in: -delta...delta, using: &generator) : 0), bounds.minimumRatio), bounds.maximumRatio)
            }
            let sizes = try Projection.project(ratios: proposed, units: units, budget: budget, bounds: bounds)
            candidates.append(Node(ratios: realised(sizes), sizes: sizes, depth: parent.depth + 1))
        }
        if settings.successiveHalving, candidates.count > 1 {
            let losses = try candidates.map { try evaluator.screen(sizes: $0.sizes, batches: settings.screeningBatches) }
            let keep = (candidates.count + 1) / 2
            let order = losses.indices.sorted { losses[$0] != losses[$1] ? losses[$0] < losses[$1] : $0 < $1 }
            screenedOut += candidates.count - keep
            candidates = order.prefix(keep).sorted().map { candidates[$0] }
        }
        for child in candidates {
            nodes[leaf].children.append(nodes.count)
            nodes.append(child)
        }
    }

    func evaluate(_ index: Int, emit: (SearchSample) throws -> Void) throws {
        let (score, computed) = try evaluator.score(sizes: nodes[index].sizes)
        if uniformScore == nil { uniformScore = score }
        let sample = SearchSample(ratios: nodes[index].ratios, sizes: nodes[index].sizes, score: score, reward: reward(score),
                                  depth: nodes[index].depth, computed: computed)
        nodes[index].sample = sample
        try emit(sample)
    }

    /// The score relative to the uniform strategy's: −L/L_uniform, or accuracy over the uniform accuracy.
    func reward(_ score: StrategyScore) -> Double {
        let uniform = uniformScore ?? score
        if settings.reward == "accuracy" { return uniform.accuracy > 0 ? score.accuracy / uniform.accuracy : score.accuracy }
        return -score.loss / uniform.loss
    }

    func backpropagate(_ path: [Int]) {
        let reward = nodes[path.last!].sample!.reward
        for i in path {
            nodes[i].visits += 1
            nodes[i].totalReward += reward
        }
    }

    func realised(_ sizes: [Int]) -> [Double] { zip(sizes, units).map { Double($0) / Double($1.width) } }
}
