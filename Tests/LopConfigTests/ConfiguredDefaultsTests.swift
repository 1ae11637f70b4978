import Bootstrap
import LopConfig
import Queue
import Testing
import Webhooks

/// Each module owns its settings with its own defaults; the configuration's defaults map onto exactly those, so
/// a program without a config file and a test building the settings directly run alike.
@Test func theConfigurationsDefaultsAreTheModulesDefaults() {
    let config = LopConfig()
    #expect(WorkerOptions(config: config.queue, name: "w") == WorkerOptions(name: "w"))
    #expect(RetryPolicy(config.queue.retry) == RetryPolicy())
    #expect(DeliverySettings(config.webhooks) == DeliverySettings())
    // A setting that differs shows through the mapping.
    var changed = config.queue
    changed.retryByKind["train"] = LopConfig.Retry()
    changed.retryByKind["train"]!.capSeconds = 5
    #expect(WorkerOptions(config: changed, name: "w").retryByKind == [.train: RetryPolicy(capSeconds: 5)])
}
