import Foundation
import Queue

/// Worker options for tests: short polls, leases and backoffs.
public func fastOptions(_ name: String, concurrency: Int = 2) -> WorkerOptions {
    var options = WorkerOptions(name: name)
    options.concurrency = concurrency
    options.pollSeconds = 0.2
    options.heartbeatSeconds = 0.2
    options.leaseSeconds = 5
    options.rescueSeconds = 0.5
    options.progressSeconds = 0.05
    options.shutdownGraceSeconds = 2
    options.retry = RetryPolicy(baseSeconds: 0.01, exponent: 1, capSeconds: 0.05)
    return options
}

/// Runs workers on threads until `done` holds (or the timeout), then stops them.
public func runWorkers(_ workers: [Worker], timeout: Double = 60, until done: () throws -> Bool) throws {
    let group = DispatchGroup()
    for worker in workers {
        group.enter()
        Thread { worker.run(); group.leave() }.start()
    }
    let deadline = Date().addingTimeInterval(timeout)
    while try !done() && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
    workers.forEach { $0.stop() }
    group.wait()
}
