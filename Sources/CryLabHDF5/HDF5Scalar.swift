import CHDF5

/// Element types CryLab stores in HDF5 datasets and attributes.
public protocol HDF5Scalar: Sendable {
    /// In-memory type used for reading and writing.
    static var memoryType: hid_t { get }
    /// On-disk type written (little-endian IEEE/standard types, as h5py and Keras write).
    static var fileType: hid_t { get }
    /// HDF5 type class and size a stored dataset must have to be read as this type.
    static var typeClass: H5T_class_t { get }
    static var byteSize: Int { get }
    static var zero: Self { get }
}

extension Float: HDF5Scalar {
    public static var memoryType: hid_t { crylab_h5t_native_float() }
    public static var fileType: hid_t { crylab_h5t_ieee_f32le() }
    public static var typeClass: H5T_class_t { H5T_FLOAT }
    public static var byteSize: Int { 4 }
}

extension Double: HDF5Scalar {
    public static var memoryType: hid_t { crylab_h5t_native_double() }
    public static var fileType: hid_t { crylab_h5t_ieee_f64le() }
    public static var typeClass: H5T_class_t { H5T_FLOAT }
    public static var byteSize: Int { 8 }
}

extension Int32: HDF5Scalar {
    public static var memoryType: hid_t { crylab_h5t_native_int32() }
    public static var fileType: hid_t { crylab_h5t_std_i32le() }
    public static var typeClass: H5T_class_t { H5T_INTEGER }
    public static var byteSize: Int { 4 }
}

extension Int64: HDF5Scalar {
    public static var memoryType: hid_t { crylab_h5t_native_int64() }
    public static var fileType: hid_t { crylab_h5t_std_i64le() }
    public static var typeClass: H5T_class_t { H5T_INTEGER }
    public static var byteSize: Int { 8 }
}

extension UInt8: HDF5Scalar {
    public static var memoryType: hid_t { crylab_h5t_native_uint8() }
    public static var fileType: hid_t { crylab_h5t_std_u8le() }
    public static var typeClass: H5T_class_t { H5T_INTEGER }
    public static var byteSize: Int { 1 }
}
