/// The complete result of a statement, copied out of libpq so that it outlives the connection's next use.
public struct Rows: Sendable, RandomAccessCollection {
    public let columns: [String]
    public let types: [Oid]
    let cells: [[String?]]
    /// Rows changed by INSERT/UPDATE/DELETE (or returned by SELECT).
    public let affected: Int

    init(columns: [String], types: [Oid], cells: [[String?]], affected: Int) {
        self.columns = columns
        self.types = types
        self.cells = cells
        self.affected = affected
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { cells.count }
    public subscript(position: Int) -> Row { Row(rows: self, index: position) }

    /// The single row of a statement that must return exactly one.
    public func single() throws -> Row {
        guard cells.count == 1 else { throw StoreError.unexpected("expected exactly one row, got \(cells.count)") }
        return self[0]
    }

    func columnIndex(_ name: String) throws -> Int {
        guard let index = columns.firstIndex(of: name) else { throw StoreError.noSuchColumn(name, available: columns) }
        return index
    }
}

/// One row; `decode` turns a column into a Swift value or throws an error naming the column and value.
public struct Row: Sendable {
    let rows: Rows
    let index: Int

    public func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        try decode(rows.columnIndex(column), as: type)
    }

    public func decode<T: PostgresDecodable>(_ column: Int, as type: T.Type = T.self) throws -> T {
        guard column >= 0 && column < rows.columns.count else {
            throw StoreError.noSuchColumn("#\(column)", available: rows.columns)
        }
        let name = rows.columns[column]
        let oid = rows.types[column]
        guard let text = rows.cells[index][column] else {
            guard let null = T.postgresNull else {
                throw StoreError.decode(column: name, index: column, value: nil, swiftType: "\(T.self)", pgType: oid, reason: "is NULL")
            }
            return null
        }
        do {
            return try T(postgresText: text, type: oid)
        } catch let failure as DecodeFailure {
            throw StoreError.decode(column: name, index: column, value: text, swiftType: "\(T.self)", pgType: oid, reason: failure.reason)
        }
    }

    /// Whether a column is NULL.
    public func isNull(_ column: String) throws -> Bool {
        try rows.cells[index][rows.columnIndex(column)] == nil
    }
}
