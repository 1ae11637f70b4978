import Foundation
@testable import Jobs
import LopConfig
import LopCore
import Models
import Pruning
import Queue
import Store
import Testing
import TestSupport
import Webhooks

/// A migrated database, an artifact root, the config pointing at it, and a webhook endpoint so that every
/// event lands in the outbox.
struct RegistryWorld {
    let target: ConnectionTarget
    let pool: ConnectionPool
    let queue: JobQueue
    let registry: Registry
    let root: ArtifactRoot
    let config: LopConfig

    init(configure: (inout LopConfig) -> Void = { _ in }) throws {
        target = try TestDatabase.createMigrated()
        pool = ConnectionPool(target: target, size: 4)
        queue = JobQueue(pool: pool)
        registry = Registry(pool: pool)
        root = try temporaryRoot()
        var config = LopConfig()
        config.artifacts.root = root.path
        config.pruning.calibrationSamples = 16
        config.training.evaluationBudgets = [0.35, 0.6]
        configure(&config)
        self.config = config
        _ = try WebhookStore(pool: pool).addEndpoint(url: "http://127.0.0.1:9/hook", events: [])
    }

    func register(_ name: String) throws -> RegisteredModel {
        try BaseRegistration(source: tinyLlamaFolder, name: name).run(registry: registry, root: root, actor: "test")
    }

    /// Inserts a job by plain SQL, as a user would.
    func insert(_ kind: String, _ args: String) throws -> Int64 {
        try pool.withConnection { try $0.query("INSERT INTO lop.jobs (kind, args) VALUES (\(kind), \(args)::jsonb) RETURNING id").single().decode("id") }
    }

    /// Runs an in-process worker until every listed job is final.
    func runUntilFinal(_ ids: [Int64], timeout: Double = 300) throws -> [Job] {
        let worker = Worker(queue: queue, handlers: JobHandlers.all(config: config), options: fastOptions("test"), listenTarget: target)
        try runWorkers([worker], timeout: timeout) { try ids.allSatisfy { try queue.get($0)?.state.isFinal == true } }
        return try ids.map { try #require(try queue.get($0)) }
    }

    func events(_ type: String) throws -> [String] {
        try pool.withConnection { c in
            try c.query("SELECT payload::text AS p FROM lop.webhook_deliveries WHERE event_type = \(type) ORDER BY created_at").map { try $0.decode("p") }
        }
    }

    func close() { pool.close() }
}

/// An independent SHA-256 (coreutils), to check the registry's digests.
func sha256sum(_ path: String) throws -> String {
    let result = try TestProcess.run(["/usr/bin/sha256sum", path])
    return String(result.output.prefix(64))
}

@Suite(.serialized) struct CompressTests {
    /// A compress job with `export` writes llama.cpp's file beside the folder, in the same completion: the registry
    /// lists it with its SHA-256, the model.registered event names it, and llama.cpp's reader accepts it. A form
    /// that does not exist is refused at once.
    @Test func aCompressJobExportsGGUFAndRegistersIt() throws {
        // Q8_0 needs rows of whole 32-value blocks, so the searched widths are multiples of 32.
        let world = try RegistryWorld { $0.pruning.alignment = 32 }
        defer { world.close() }
        let base = try world.register("tiny-llama")
        let args = #"{"model": "tiny-llama", "budget": 0.5, "method": "search", "search": {"simulations": 4}, "export": ["gguf-q8_0", "hf"]}"#
        let job = try world.runUntilFinal([try world.insert("compress", args)])[0]
        #expect(job.state == .completed, "\(job.errors)")
        let summary = try #require(try job.result?.decode(CompressSummary.self))
        let reference = try #require(summary.model)
        let model = try #require(try world.registry.model(id: reference.id))
        let folder = world.root.folder(model)
        let digest = try #require(model.files["model-q8_0.gguf"])
        #expect(try sha256sum(folder + "/model-q8_0.gguf") == digest.sha256 && digest.bytes > 0)
        let event = try #require(try world.events("model.registered").last)
        #expect(event.contains(#""model-q8_0.gguf": {"#) && event.contains(digest.sha256), "\(event)")
        let python = TestDatabase.repositoryRoot + "/.venv-check/bin/python"
        let check = try TestProcess.run([python, TestDatabase.repositoryRoot + "/scripts/gguf_check.py", folder + "/model-q8_0.gguf", folder])
        #expect(check.output.contains(#""ok": true"#), "\(check.output)")
        _ = base
        let bad = try world.runUntilFinal([try world.insert("compress", #"{"model": "tiny-llama", "budget": 0.5, "export": ["onnx"]}"#)])[0]
        #expect(bad.state == .discarded && bad.errors.last?.error.contains("'export'") == true && bad.errors.last?.error.contains("onnx") == true, "\(bad.errors)")
    }

    @Test func aCompressJobInsertedBySQLRegistersAnEvaluatedModelThatMeetsTheBudgetAndADuplicateReusesIt() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        let base = try world.register("tiny-llama")
        #expect(base.kind == .base && base.files.keys.sorted() == ["MODEL_CARD.md", "config.json", "heldout.bin", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
        let args = #"{"model": "tiny-llama", "budget": {"kind": "fraction", "value": 0.4}, "method": "search", "search": {"simulations": 8}}"#
        let id = try world.insert("compress", args)
        let job = try world.runUntilFinal([id])[0]
        #expect(job.state == .completed, "\(job.errors)")
        let summary = try #require(try job.result?.decode(CompressSummary.self))
        let modelRef = try #require(summary.model)
        let model = try #require(try world.registry.model(id: modelRef.id))
        #expect(model.kind == .pruned && model.baseModelId == base.id && model.sourceJobId == id && model.method == "search")
        #expect(model.name == "tiny-llama-pruned" && model.version == 1 && summary.methodUsed == "search" && summary.fallback == nil)

        // The files exist and their SHA-256 are the registry's (checked with coreutils).
        let folder = world.root.folder(model)
        for (file, digest) in model.files {
            #expect(try sha256sum(folder + "/" + file) == digest.sha256, "\(file)")
        }
        #expect(Set(model.files.keys).isSuperset(of: ["config.json", "model.safetensors", "pruning.json", "report.html", "report.json"]))
        // The pruned variant reads inputs as its base does: the tokenizer files travel with it, unchanged.
        #expect(model.files["tokenizer.json"] == base.files["tokenizer.json"] && model.files["tokenizer_config.json"] == base.files["tokenizer_config.json"])
        #expect(world.root.temporaryFolders().isEmpty)

        // The parameter count meets the budget: 40 % of the FFN parameters, within one neuron, and the file is
        // written in the base's weight type, so it is smaller than the base's.
        let pruned = try Model.load(directory: folder)
        let original = try Model.load(directory: world.root.folder(base))
        let units = try original.prunableUnits(.language)
        let removable = Projection.prunableParameters(units)
        let kept = removable - (original.parameterCount - pruned.parameterCount)
        #expect(Int64(pruned.parameterCount) == model.parameters && model.parameters == summary.parameters)
        #expect(Double(kept) <= 0.4 * Double(removable) && Double(kept) > 0.4 * Double(removable) - Double(units[0].parametersPerNeuron))
        #expect(model.files["model.safetensors"]!.bytes < base.files["model.safetensors"]!.bytes)

        // The metrics are in the result and the registry, measured on the written files, worse than the base's.
        let metrics = try #require(summary.metrics)
        let baseLoss = try #require(summary.baseMetrics).loss
        #expect(metrics.loss.isFinite && metrics.loss > baseLoss && metrics.count > 1000)
        #expect(model.metrics.text.contains("\(metrics.loss)"))
        #expect(summary.timings.keys.sorted() == ["evaluate", "prune", "register", "strategy", "total"])

        // Events in the outbox, written with the completion: the base's and this model's registration, the job's completion.
        #expect(try world.events("model.registered").count == 2)
        #expect(try world.events("job.completed").count == 1)

        // Lineage: the searched model's samples are those of its search.
        let lineage = try world.registry.lineageSamples(model.id)
        #expect(lineage.count == summary.samplesWritten && lineage.count > 0)

        // A duplicate request reuses the registered model: no second row, no second folder.
        let again = try world.runUntilFinal([try world.insert("compress", args)])[0]
        let reused = try #require(try again.result?.decode(CompressSummary.self))
        #expect(again.state == .completed && reused.reused && reused.model == summary.model && reused.metrics == summary.metrics)
        #expect(try world.registry.list(kind: .pruned).count == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: world.root.path + "/pruned/tiny-llama-pruned").count == 1)
        #expect(try world.events("model.registered").count == 2)
    }

    /// The paper's architectures as registered bases (the transformers-made LLaVA-OneVision and Qwen2.5-VL, with
    /// question files about image files as calibration and held-out data): a searched compress job completes,
    /// and the registered variant loads back, meets the budget and carries its base's tokenizer and preprocessing.
    @Test(arguments: ["llava-onevision", "qwen2.5-vl"])
    func aCompressJobPrunesThePapersArchitectures(reference: String) throws {
        let world = try RegistryWorld()
        defer { world.close() }
        let source = TestDatabase.repositoryRoot + "/Tests/References/models/" + reference
        let questions = world.root.path + "/\(reference).jsonl"
        let prompts = ["What is this?", "Is it bright?", "Describe it.", "What colour?", "Is it noisy?", "Which shape?"]
        let images = try FileManager.default.contentsOfDirectory(atPath: source + "/images").sorted().filter { !$0.hasPrefix("two-images") }
        let lines = (0..<18).map { i in
            #"{"image": "\#(source)/images/\#(images[i % images.count])", "question": "\#(prompts[i % prompts.count])", "answer": "free software \#(i)"}"#
        }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: questions))
        let base = try BaseRegistration(source: source, name: "tiny-" + reference.replacingOccurrences(of: ".", with: "-"), evalData: questions,
                                        calibration: questions).run(registry: world.registry, root: world.root, actor: "test")
        #expect(base.files["preprocessor_config.json"] != nil && base.files["tokenizer.json"] != nil)
        let args = #"{"model": "\#(base.name)", "budget": 0.5, "method": "search", "search": {"simulations": 6}, "reconstruction": "none"}"#
        let job = try world.runUntilFinal([try world.insert("compress", args)])[0]
        #expect(job.state == .completed, "\(job.errors)")
        let summary = try #require(try job.result?.decode(CompressSummary.self))
        let registered = try #require(summary.model)
        let model = try #require(try world.registry.model(id: registered.id))
        #expect(model.files["preprocessor_config.json"] == base.files["preprocessor_config.json"] && model.files["tokenizer.json"] == base.files["tokenizer.json"])
        let pruned = try Model.load(directory: world.root.folder(model)), original = try Model.load(directory: world.root.folder(base))
        let units = try original.prunableUnits(.language)
        let kept = Projection.prunableParameters(units) - (original.parameterCount - pruned.parameterCount)
        #expect(Double(kept) <= 0.5 * Double(Projection.prunableParameters(units)) && pruned.imageText != nil)
        let metrics = try #require(summary.metrics)
        #expect(metrics.loss.isFinite && metrics.count > 0)
    }

    /// The same request re-fitted is another request: its own model, recorded as least-squares in its result,
    /// its pruning.json and its samples, and better on the held-out data than the sliced one.
    @Test func aRefittedCompressIsItsOwnRequestAndBeatsTheSlicedOne() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        _ = try world.register("tiny-llama")
        let args = { (r: String) in #"{"model": "tiny-llama", "budget": 0.4, "method": "search", "search": {"simulations": 6}, "reconstruction": "\#(r)"}"# }
        let jobs = try world.runUntilFinal([try world.insert("compress", args("none")), try world.insert("compress", args("least-squares"))])
        let (sliced, refit) = (try #require(try jobs[0].result?.decode(CompressSummary.self)), try #require(try jobs[1].result?.decode(CompressSummary.self)))
        #expect(jobs.allSatisfy { $0.state == .completed }, "\(jobs.map(\.errors))")
        #expect(sliced.reconstruction == ReconstructionMethod.none && refit.reconstruction == .leastSquares && sliced.model != refit.model)
        let (refitLoss, slicedLoss) = (try #require(refit.metrics).loss, try #require(sliced.metrics).loss)
        #expect(refitLoss < slicedLoss)
        let refitModel = try #require(refit.model)
        let model = try #require(try world.registry.model(id: refitModel.id))
        let record = try JSONDecoder().decode(PruningRecord.self, from: Data(contentsOf: URL(fileURLWithPath: world.root.folder(model) + "/pruning.json")))
        #expect(record.reconstruction == .leastSquares && record.ridge == world.config.pruning.reconstructionRidge)
        let samples = try SampleStore(pool: world.pool).samples(searchKey: "job:\(jobs[1].id)")
        #expect(!samples.isEmpty && samples.allSatisfy { $0.reconstruction == "least-squares" })
    }

    @Test func invalidRequestsAreDiscardedWithAClearErrorAndAJobFailedEvent() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        _ = try world.register("tiny-llama")
        let cases: [(args: String, error: String)] = [
            (#"{"model": "no-such-model", "budget": 0.5}"#, "no model named \"no-such-model\" is registered"),
            (#"{"model": "tiny-llama@production", "budget": 0.5}"#, "\"tiny-llama\" has no alias \"production\""),
            (#"{"model": "tiny-llama:7", "budget": 0.5}"#, "\"tiny-llama\" has no version 7"),
            (#"{"model": "tiny-llama", "budget": 1.5}"#, "'budget'"),
            (#"{"model": "tiny-llama", "budget": 0.01}"#, "'budget' the budget allows"),
            (#"{"model": "tiny-llama", "budget": 0.5, "method": "guess"}"#, "must be predict, search or auto, got \"guess\""),
            (#"{"model": "tiny-llama", "budget": 0.5, "method": "predict"}"#, "has no champion predictor yet"),
            (#"{"model": "tiny-llama", "budget": 0.5, "colour": "red"}"#, "'colour' is not an argument of compress"),
            (#"{"budget": 0.5}"#, "'model' is required"),
        ]
        let ids = try cases.map { try world.insert("compress", $0.args) }
        let jobs = try world.runUntilFinal(ids)
        for (job, expected) in zip(jobs, cases) {
            #expect(job.state == .discarded && job.attempt == 1, "\(expected.args)")
            #expect(job.errors.last?.error.contains(expected.error) == true, "\(expected.args): \(job.errors.last?.error ?? "none")")
        }
        #expect(try world.events("job.failed").count == cases.count)
        #expect(try world.registry.list(kind: .pruned).isEmpty && world.root.temporaryFolders().isEmpty)
    }

    @Test func championAndChallengerPromotionPredictionAndItsFallback() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        let a = try world.register("a")
        _ = try world.register("b")

        // Samples of "a" from a sweep over three budgets (registry names work as search models).
        let sweep = try world.insert("sweep", #"{"model": "a", "budgets": [0.3, 0.5, 0.7], "samples": 16, "search": {"simulations": 24}}"#)
        #expect(try world.runUntilFinal([sweep])[0].state == .completed)
        let samples = try SampleStore(pool: world.pool).samples(model: a.contentHash)
        #expect(samples.count >= 30)
        // The calibration the sweep ranked with is the one the base ranks with (16 windows of the corpus).
        #expect(Set(samples.map(\.calibrationHash)).count == 1)

        // 1: a barely trained predictor becomes champion (there is none); 2: a trained one beats it; 3: a barely
        // trained one again is only a candidate.
        func train(_ steps: Int) throws -> TrainOutcome {
            let id = try world.insert("train", #"{"model": "a", "steps": \#(steps), "ensemble": 1, "force": true}"#)
            let job = try world.runUntilFinal([id])[0]
            #expect(job.state == .completed, "\(job.errors)")
            return try #require(try job.result?.decode([String: [TrainOutcome]].self)["models"]?.first)
        }
        let first = try train(1)
        #expect(first.status == "trained" && first.promoted && first.champion == nil && first.reason == "no champion yet")
        let second = try train(300)
        #expect(second.promoted && second.champion == first.challenger)
        #expect(second.challengerMeanLoss! < second.championMeanLoss! && Set(second.championLosses!.keys) == ["0.35", "0.6"])
        let third = try train(1)
        #expect(!third.promoted && third.champion == second.challenger && third.challengerMeanLoss! > third.championMeanLoss!)
        #expect(third.throughSampleId == samples.compactMap(\.id).max())

        let champion = try world.registry.resolve(ModelReference(name: "a.predictor", selector: .alias("champion")))
        let candidate = try world.registry.resolve(ModelReference(name: "a.predictor", selector: .alias("candidate")))
        #expect(champion.id == second.challenger?.id && candidate.id == third.challenger?.id)
        let history = try world.registry.aliasHistory(name: "a.predictor")
        #expect(history.map(\.alias) == ["champion", "champion", "candidate"])
        #expect(history.map(\.modelId) == [first.challenger?.id, second.challenger?.id, third.challenger?.id])
        #expect(history[1].previousModelId == first.challenger?.id && history.allSatisfy { $0.changedBy.hasPrefix("job:") && $0.jobId != nil })
        #expect(try world.events("predictor.promoted").count == 2)
        // Lineage: the champion learnt from every sample of the sweep.
        #expect(try world.registry.lineageSamples(champion.id).count == samples.count)

        // Without new samples a train job skips the model.
        let skip = try world.runUntilFinal([try world.insert("train", #"{"model": "a"}"#)])[0]
        #expect(try skip.result?.decode([String: [TrainOutcome]].self)["models"]?.first?.status == "skipped")

        // A predictor of "a" cannot prune "b", even though their weights are the same.
        let wrong = try world.runUntilFinal([try world.insert("compress", #"{"model": "b", "budget": 0.45, "predictor": "a.predictor@champion"}"#)])[0]
        #expect(wrong.state == .discarded && wrong.errors.last?.error.contains("is not a predictor of b:1") == true)

        // predict: the champion's strategy, recorded in the lineage; auto outside the trained range searches and says why.
        let ids = [try world.insert("compress", #"{"model": "a", "budget": 0.45, "method": "predict"}"#),
                   try world.insert("compress", #"{"model": "a", "budget": 0.15, "method": "auto", "search": {"simulations": 4}}"#)]
        let jobs = try world.runUntilFinal(ids)
        let predicted = try #require(try jobs[0].result?.decode(CompressSummary.self))
        let fallback = try #require(try jobs[1].result?.decode(CompressSummary.self))
        #expect(predicted.methodUsed == "predict" && predicted.predictor?.id == champion.id && predicted.prediction?.inTrainedRange == true)
        #expect(try world.registry.model(id: predicted.model!.id)?.predictorId == champion.id)
        #expect(try world.registry.lineageSamples(predicted.model!.id).count == samples.count)
        #expect(fallback.methodUsed == "search" && fallback.fallback?.contains("outside the predictor's trained range") == true)
        #expect(abs(fallback.keptFraction - 0.15) < 0.01 && abs(predicted.keptFraction - 0.45) < 0.01)
    }
}

/// A real lop-worker killed with SIGKILL while it prunes and evaluates.
@Suite(.serialized) struct CompressCrashTests {
    var binaries: String { URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path }

    @Test func aWorkerKilledDuringPruningLeavesOneModelOneFolderAndNoTemporaryFiles() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        _ = try world.register("tiny-llama")
        let env = [
            "LOP_CONFIG": TestDatabase.repositoryRoot + "/Config/lop.yaml",
            "LOP_DATABASE_URL": world.target.parameters.map { "\($0.0)=\($0.1)" }.joined(separator: " "),
            "LOP_ARTIFACTS_ROOT": world.root.path, "LOP_PRUNING_CALIBRATION_SAMPLES": "16", "LOP_TRAINING_SCHEDULE": "",
            "LOP_QUEUE_LEASE_SECONDS": "2", "LOP_QUEUE_HEARTBEAT_SECONDS": "0.3", "LOP_QUEUE_RESCUE_SECONDS": "0.5",
            "LOP_QUEUE_POLL_SECONDS": "0.2", "LOP_QUEUE_PROGRESS_SECONDS": "0.1", "LOP_QUEUE_RETRY_BASE_SECONDS": "0.1",
            "LOP_QUEUE_RETRY_CAP_SECONDS": "0.5",
        ]
        let id = try world.insert("compress", #"{"model": "tiny-llama", "budget": 0.5, "method": "search", "search": {"simulations": 6}}"#)
        let first = try TestProcess.start([binaries + "/lop-worker", "--name", "doomed", "--concurrency", "1"], environment: env)
        // Stage 2 (prune) and 3 (evaluate) run with the temporary folder in place.
        let caught = waitUntil(timeout: 120) {
            let message = (try? world.queue.get(id))??.progressMessage ?? ""
            return message.hasPrefix("2/4") || message.hasPrefix("3/4")
        }
        first.signal(SIGKILL)
        #expect(first.wait(timeout: 10) == 128 + SIGKILL)
        #expect(caught)
        #expect(try world.queue.get(id)?.state == .running)

        let second = try TestProcess.start([binaries + "/lop-worker", "--name", "survivor", "--concurrency", "1"], environment: env)
        defer { second.signal(SIGTERM); _ = second.wait(timeout: 20) }
        #expect(try waitUntil(timeout: 180) { try world.queue.get(id)?.state.isFinal == true })
        let job = try #require(try world.queue.get(id))
        #expect(job.state == .completed && job.attempt == 2 && job.attemptedBy == "survivor", "\(job.errors)")
        let models = try world.registry.list(kind: .pruned)
        #expect(models.count == 1 && models[0].sourceJobId == id)
        #expect(try FileManager.default.contentsOfDirectory(atPath: world.root.path + "/pruned/tiny-llama-pruned").count == 1)
        #expect(world.root.temporaryFolders().isEmpty)
        #expect(world.root.verify(models[0]).isEmpty)
    }

/// A request's key follows its budget's identity: a byte budget at 4 bytes a weight is another request.
@Test func compressRequestKeysTellByteWidthsApart() throws {
    let key = { (budget: String) in CompressHandler.requestKey(base: 1, budget: try Budget(parsing: budget), method: "auto", predictor: nil, search: "{}") }
    #expect(try key("bytes:2000000") != key("bytes:2000000@4"))
    #expect(try key("50%") == key("0.5"))
    #expect(try key("0.5") != CompressHandler.requestKey(base: 2, budget: .fraction(0.5), method: "auto", predictor: nil, search: "{}"))
}

}
