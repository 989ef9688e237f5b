// The seeded generator and memory policy every layer uses live in CryLabCore.
@_exported import CryLabCore
