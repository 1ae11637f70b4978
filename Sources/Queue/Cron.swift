import Foundation
import LopCore

/// A five-field cron expression (minute hour day-of-month month day-of-week), evaluated in UTC.
/// Fields take `*`, numbers, ranges `a-b`, steps `*/n` or `a-b/n`, and lists `x,y`. Day of week 0 or 7 is
/// Sunday. As in cron, when both day fields are restricted a day matching either one fires.
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    public let description: String
    let minutes: Set<Int>, hours: Set<Int>, days: Set<Int>, months: Set<Int>, weekdays: Set<Int>
    let daysRestricted: Bool, weekdaysRestricted: Bool

    public init(_ expression: String) throws {
        let fields = expression.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else { throw CronError(expression, "needs 5 fields (minute hour day month weekday), got \(fields.count)") }
        func parse(_ field: String, _ name: String, _ range: ClosedRange<Int>) throws -> Set<Int> {
            var values = Set<Int>()
            for part in field.split(separator: ",", omittingEmptySubsequences: false) {
                let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
                guard pieces.count <= 2 else { throw CronError(expression, "bad \(name) '\(part)'") }
                var step = 1
                if pieces.count == 2 {
                    guard let s = Int(pieces[1]), s > 0 else { throw CronError(expression, "bad step in \(name) '\(part)'") }
                    step = s
                }
                let span: ClosedRange<Int>
                if pieces[0] == "*" {
                    span = range
                } else {
                    let bounds = pieces[0].split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
                    guard (1...2).contains(bounds.count), bounds.allSatisfy({ $0 != nil }) else { throw CronError(expression, "bad \(name) '\(part)'") }
                    let low = bounds[0]!, high = bounds.count == 2 ? bounds[1]! : (pieces.count == 2 ? range.upperBound : low)
                    guard range.contains(low), range.contains(high), low <= high else {
                        throw CronError(expression, "\(name) '\(part)' is outside \(range.lowerBound)-\(range.upperBound)")
                    }
                    span = low...high
                }
                values.formUnion(stride(from: span.lowerBound, through: span.upperBound, by: step))
            }
            return values
        }
        minutes = try parse(fields[0], "minute", 0...59)
        hours = try parse(fields[1], "hour", 0...23)
        days = try parse(fields[2], "day of month", 1...31)
        months = try parse(fields[3], "month", 1...12)
        weekdays = Set(try parse(fields[4], "day of week", 0...7).map { $0 % 7 })
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
        description = expression
    }

    /// Whether the schedule fires in the minute that starts at `date` (seconds are ignored).
    public func matches(_ date: Date) -> Bool {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var t = tm()
        gmtime_r(&seconds, &t)
        guard minutes.contains(Int(t.tm_min)), hours.contains(Int(t.tm_hour)), months.contains(Int(t.tm_mon) + 1) else { return false }
        let dayMatch = days.contains(Int(t.tm_mday)), weekdayMatch = weekdays.contains(Int(t.tm_wday))
        switch (daysRestricted, weekdaysRestricted) {
        case (true, true): return dayMatch || weekdayMatch
        case (true, false): return dayMatch
        case (false, true): return weekdayMatch
        case (false, false): return true
        }
    }

    /// The latest fire time at or before `date` and no older than `window` seconds, if any.
    public func latestFire(atOrBefore date: Date, within window: Double) -> Date? {
        var minute = Date(timeIntervalSince1970: (date.timeIntervalSince1970 / 60).rounded(.down) * 60)
        let oldest = date.addingTimeInterval(-window)
        while minute >= oldest {
            if matches(minute) { return minute }
            minute = minute.addingTimeInterval(-60)
        }
        return nil
    }
}

public struct CronError: Error, CustomStringConvertible {
    public let description: String
    init(_ expression: String, _ reason: String) { description = "cron expression '\(expression)': \(reason)" }
}

extension CronError: LopError {
    public var exitCode: Int32 { ExitStatus.configError }
}
