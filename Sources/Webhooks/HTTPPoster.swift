import CCurl
import Foundation

/// What a receiver answered, or why there was no answer.
/// The libcurl version lop is linked against, as `curl_version()` reports it.
public var libcurlVersion: String { String(cString: curl_version()) }

public struct PostOutcome: Sendable, Equatable {
    public var statusCode: Int?
    /// The `Retry-After` header, as sent.
    public var retryAfter: String?
    /// The start of the response body (bounded).
    public var snippet: String
    /// Transport failure (refused, timed out, TLS, …); nil when a response arrived.
    public var error: String?
    public var seconds: Double
}

/// Many POSTs in flight at once on one thread through libcurl's multi interface. No redirect is followed, only
/// http and https are spoken, and each request connects only to the addresses its `Destination` checked.
public final class HTTPPoster {
    public let timeoutSeconds: Double
    public let snippetBytes: Int
    let userAgent: String
    private let multi: UnsafeMutableRawPointer
    private var transfers: [UnsafeMutableRawPointer: Transfer] = [:]

    /// One request's handle and buffers, alive until it completes.
    final class Transfer {
        let key: String
        let handle: UnsafeMutableRawPointer
        var headers: UnsafeMutablePointer<curl_slist>?
        var resolve: UnsafeMutablePointer<curl_slist>?
        var body: [UInt8] = []
        let limit: Int
        let started = DispatchTime.now().uptimeNanoseconds

        init(key: String, handle: UnsafeMutableRawPointer, limit: Int) {
            (self.key, self.handle, self.limit) = (key, handle, limit)
        }
    }

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    public init(timeoutSeconds: Double, snippetBytes: Int, userAgent: String) {
        _ = Self.globalInit
        (self.timeoutSeconds, self.snippetBytes, self.userAgent) = (timeoutSeconds, snippetBytes, userAgent)
        multi = curl_multi_init()
    }

    deinit {
        for transfer in transfers.values { finish(transfer) }
        curl_multi_cleanup(multi)
    }

    public var inFlight: Int { transfers.count }

    /// Starts posting `body` to a checked destination; its outcome comes back from `poll` under `key`.
    public func start(key: String, destination: Destination, headers: [(String, String)], body: [UInt8]) throws(WebhookError) {
        guard let handle = curl_easy_init() else { throw WebhookError("libcurl could not create a handle") }
        let transfer = Transfer(key: key, handle: handle, limit: snippetBytes)
        for (name, value) in headers + [("Expect", "")] {
            transfer.headers = curl_slist_append(transfer.headers, value.isEmpty ? "\(name):" : "\(name): \(value)")
        }
        let pinned = destination.addresses.map { $0.contains(":") ? "[\($0)]" : $0 }.joined(separator: ",")
        transfer.resolve = curl_slist_append(nil, "\(destination.host):\(destination.port):\(pinned)")
        var failed: CURLcode = CURLE_OK
        func set(_ code: CURLcode) { if code != CURLE_OK && failed == CURLE_OK { failed = code } }
        set(lop_curl_set_string(handle, CURLOPT_URL, destination.url))
        set(lop_curl_set_list(handle, CURLOPT_RESOLVE, transfer.resolve))
        set(lop_curl_set_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
        set(lop_curl_set_long(handle, CURLOPT_FOLLOWLOCATION, 0))
        set(lop_curl_set_long(handle, CURLOPT_NOSIGNAL, 1))
        set(lop_curl_set_long(handle, CURLOPT_TIMEOUT_MS, Int(timeoutSeconds * 1000)))
        set(lop_curl_set_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Int(min(timeoutSeconds, 10) * 1000)))
        set(lop_curl_set_string(handle, CURLOPT_USERAGENT, userAgent))
        set(lop_curl_set_list(handle, CURLOPT_HTTPHEADER, transfer.headers))
        set(lop_curl_set_long(handle, CURLOPT_POST, 1))
        set(lop_curl_set_long(handle, CURLOPT_POSTFIELDSIZE, body.count))
        body.withUnsafeBufferPointer { p in set(lop_curl_set_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: p.baseAddress ?? UnsafePointer(bitPattern: 1)!))) }
        set(lop_curl_set_write_function(handle) { data, size, count, context in
            let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
            let n = size * count
            let room = max(0, transfer.limit - transfer.body.count)
            if room > 0, let data { data.withMemoryRebound(to: UInt8.self, capacity: n) { transfer.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: min(n, room))) } }
            return n
        })
        set(lop_curl_set_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(transfer).toOpaque()))
        guard failed == CURLE_OK else {
            finish(transfer)
            throw WebhookError("libcurl rejected an option: \(String(cString: curl_easy_strerror(failed)))")
        }
        transfers[handle] = transfer
        curl_multi_add_handle(multi, handle)
    }

    /// Drives the transfers, waiting up to `timeout` seconds for activity, and returns those that finished.
    public func poll(timeout: Double) -> [(key: String, outcome: PostOutcome)] {
        var running: Int32 = 0
        curl_multi_perform(multi, &running)
        var done = completed()
        if done.isEmpty && !transfers.isEmpty {
            curl_multi_poll(multi, nil, 0, Int32(max(0, timeout * 1000)), nil)
            curl_multi_perform(multi, &running)
            done = completed()
        }
        return done
    }

    private func completed() -> [(key: String, outcome: PostOutcome)] {
        var out: [(String, PostOutcome)] = []
        var left: Int32 = 0
        while let message = curl_multi_info_read(multi, &left) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle, let transfer = transfers[handle] else { continue }
            let result = lop_curl_message_result(message)
            var status = 0
            _ = lop_curl_get_long(handle, CURLINFO_RESPONSE_CODE, &status)
            var retryAfter: String?
            var header: UnsafeMutablePointer<curl_header>?
            if curl_easy_header(handle, "Retry-After", 0, UInt32(CURLH_HEADER), -1, &header) == CURLHE_OK, let value = header?.pointee.value {
                retryAfter = String(cString: value)
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - transfer.started) / 1e9
            let transport = result == CURLE_OK ? nil : String(cString: curl_easy_strerror(result))
            out.append((transfer.key, PostOutcome(statusCode: status > 0 && transport == nil ? status : nil, retryAfter: retryAfter,
                                                  snippet: String(decoding: transfer.body, as: UTF8.self), error: transport, seconds: seconds)))
            finish(transfer)
        }
        return out
    }

    private func finish(_ transfer: Transfer) {
        curl_multi_remove_handle(multi, transfer.handle)
        curl_easy_cleanup(transfer.handle)
        curl_slist_free_all(transfer.headers)
        curl_slist_free_all(transfer.resolve)
        transfers[transfer.handle] = nil
    }
}
