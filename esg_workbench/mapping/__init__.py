"""Mapping landed data onto ESG fields and aggregating it into KPIs (Qt-free).

Public API for the canvas and the CLI:

* catalog:      load_catalog() -> Catalog (entities, fields, KPIs, vocabularies)
* model:        Mapping, TableMapping, Edge; edit operations AddTable, RemoveTable, SetTable,
                AddEdge, RemoveEdge, SetEdge, SetMapping (mapping.apply(op) -> inverse);
                validate(), check_edge(), compatible_fields(), propose_edges()
* transforms:   Cast, Unit, FuelEnergy, ValueMap, Constant, Period, Expression, Lookup
* store:        save_mapping() (a new version each time), load_mapping(), list_mappings(),
                history(), shipped_mapping(), read_mapping_file()
* apply:        validate_in_workspace(), preview(), apply_mapping()
* aggregate:    aggregate(), kpi_rows(), drill_down(), find_value()
* factors:      builtin(), load_factor_set(), import_factor_set(), list_factor_sets()
"""
