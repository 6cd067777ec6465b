"""MongoDB storage: the ``mongodb`` sink (:mod:`.sink`) and the bulk record <-> BSON document
encoding it writes with (:mod:`.documents`)."""
