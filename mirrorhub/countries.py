"""Countries: ISO 3166-1 alpha-2 code -> continent and an approximate centroid.

The centroid is used when a GeoIP record knows the country but has no coordinates, and for
mirrors registered with only a country. Values are approximate geographic centres (within a few
hundred km), which is all distance ranking needs. Continents follow the GeoNames/MaxMind
convention: Russia is EU, Turkey and the Caucasus are AS, Central America and the Caribbean are
NA. ``XK`` (Kosovo) is not ISO-assigned but GeoIP databases use it, so it is listed.
"""

from __future__ import annotations

CONTINENTS: dict[str, str] = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# code: (continent, latitude, longitude)
COUNTRIES: dict[str, tuple[str, float, float]] = {
    "AD": ("EU", 42.5, 1.5),  # Andorra
    "AE": ("AS", 24.0, 54.0),  # United Arab Emirates
    "AF": ("AS", 33.0, 65.0),  # Afghanistan
    "AG": ("NA", 17.05, -61.8),  # Antigua and Barbuda
    "AI": ("NA", 18.25, -63.17),  # Anguilla
    "AL": ("EU", 41.0, 20.0),  # Albania
    "AM": ("AS", 40.0, 45.0),  # Armenia
    "AO": ("AF", -12.5, 18.5),  # Angola
    "AQ": ("AN", -75.0, 0.0),  # Antarctica
    "AR": ("SA", -34.0, -64.0),  # Argentina
    "AS": ("OC", -14.33, -170.0),  # American Samoa
    "AT": ("EU", 47.33, 13.33),  # Austria
    "AU": ("OC", -25.0, 134.0),  # Australia
    "AW": ("NA", 12.5, -69.97),  # Aruba
    "AX": ("EU", 60.2, 19.9),  # Åland Islands
    "AZ": ("AS", 40.5, 47.5),  # Azerbaijan
    "BA": ("EU", 44.0, 18.0),  # Bosnia and Herzegovina
    "BB": ("NA", 13.17, -59.53),  # Barbados
    "BD": ("AS", 24.0, 90.0),  # Bangladesh
    "BE": ("EU", 50.83, 4.0),  # Belgium
    "BF": ("AF", 13.0, -2.0),  # Burkina Faso
    "BG": ("EU", 43.0, 25.0),  # Bulgaria
    "BH": ("AS", 26.0, 50.55),  # Bahrain
    "BI": ("AF", -3.5, 30.0),  # Burundi
    "BJ": ("AF", 9.5, 2.25),  # Benin
    "BL": ("NA", 17.9, -62.83),  # Saint Barthélemy
    "BM": ("NA", 32.33, -64.75),  # Bermuda
    "BN": ("AS", 4.5, 114.67),  # Brunei
    "BO": ("SA", -17.0, -65.0),  # Bolivia
    "BQ": ("NA", 12.18, -68.25),  # Bonaire, Sint Eustatius and Saba
    "BR": ("SA", -10.0, -55.0),  # Brazil
    "BS": ("NA", 24.25, -76.0),  # Bahamas
    "BT": ("AS", 27.5, 90.5),  # Bhutan
    "BV": ("AN", -54.43, 3.4),  # Bouvet Island
    "BW": ("AF", -22.0, 24.0),  # Botswana
    "BY": ("EU", 53.0, 28.0),  # Belarus
    "BZ": ("NA", 17.25, -88.75),  # Belize
    "CA": ("NA", 60.0, -95.0),  # Canada
    "CC": ("AS", -12.5, 96.83),  # Cocos (Keeling) Islands
    "CD": ("AF", -2.9, 23.6),  # Congo (Democratic Republic)
    "CF": ("AF", 7.0, 21.0),  # Central African Republic
    "CG": ("AF", -1.0, 15.0),  # Congo
    "CH": ("EU", 46.8, 8.2),  # Switzerland
    "CI": ("AF", 7.5, -5.5),  # Côte d'Ivoire
    "CK": ("OC", -21.23, -159.77),  # Cook Islands
    "CL": ("SA", -30.0, -71.0),  # Chile
    "CM": ("AF", 6.0, 12.0),  # Cameroon
    "CN": ("AS", 35.0, 105.0),  # China
    "CO": ("SA", 4.0, -72.0),  # Colombia
    "CR": ("NA", 10.0, -84.0),  # Costa Rica
    "CU": ("NA", 21.5, -80.0),  # Cuba
    "CV": ("AF", 16.0, -24.0),  # Cabo Verde
    "CW": ("NA", 12.17, -69.0),  # Curaçao
    "CX": ("AS", -10.5, 105.67),  # Christmas Island
    "CY": ("EU", 35.0, 33.0),  # Cyprus
    "CZ": ("EU", 49.75, 15.5),  # Czechia
    "DE": ("EU", 51.0, 9.0),  # Germany
    "DJ": ("AF", 11.5, 43.0),  # Djibouti
    "DK": ("EU", 56.0, 10.0),  # Denmark
    "DM": ("NA", 15.42, -61.33),  # Dominica
    "DO": ("NA", 19.0, -70.67),  # Dominican Republic
    "DZ": ("AF", 28.0, 3.0),  # Algeria
    "EC": ("SA", -2.0, -77.5),  # Ecuador
    "EE": ("EU", 59.0, 26.0),  # Estonia
    "EG": ("AF", 27.0, 30.0),  # Egypt
    "EH": ("AF", 24.5, -13.0),  # Western Sahara
    "ER": ("AF", 15.0, 39.0),  # Eritrea
    "ES": ("EU", 40.0, -4.0),  # Spain
    "ET": ("AF", 8.0, 38.0),  # Ethiopia
    "FI": ("EU", 64.0, 26.0),  # Finland
    "FJ": ("OC", -18.0, 178.0),  # Fiji
    "FK": ("SA", -51.75, -59.0),  # Falkland Islands
    "FM": ("OC", 6.92, 158.25),  # Micronesia
    "FO": ("EU", 62.0, -7.0),  # Faroe Islands
    "FR": ("EU", 46.5, 2.5),  # France (metropolitan)
    "GA": ("AF", -1.0, 11.75),  # Gabon
    "GB": ("EU", 54.0, -2.0),  # United Kingdom
    "GD": ("NA", 12.12, -61.67),  # Grenada
    "GE": ("AS", 42.0, 43.5),  # Georgia
    "GF": ("SA", 4.0, -53.0),  # French Guiana
    "GG": ("EU", 49.47, -2.58),  # Guernsey
    "GH": ("AF", 8.0, -1.0),  # Ghana
    "GI": ("EU", 36.13, -5.35),  # Gibraltar
    "GL": ("NA", 72.0, -40.0),  # Greenland
    "GM": ("AF", 13.47, -16.57),  # Gambia
    "GN": ("AF", 11.0, -10.0),  # Guinea
    "GP": ("NA", 16.25, -61.58),  # Guadeloupe
    "GQ": ("AF", 1.6, 10.5),  # Equatorial Guinea
    "GR": ("EU", 39.0, 22.0),  # Greece
    "GS": ("AN", -54.5, -37.0),  # South Georgia and the South Sandwich Islands
    "GT": ("NA", 15.5, -90.25),  # Guatemala
    "GU": ("OC", 13.47, 144.78),  # Guam
    "GW": ("AF", 12.0, -15.0),  # Guinea-Bissau
    "GY": ("SA", 5.0, -59.0),  # Guyana
    "HK": ("AS", 22.3, 114.17),  # Hong Kong
    "HM": ("AN", -53.1, 73.5),  # Heard Island and McDonald Islands
    "HN": ("NA", 15.0, -86.5),  # Honduras
    "HR": ("EU", 45.17, 15.5),  # Croatia
    "HT": ("NA", 19.0, -72.42),  # Haiti
    "HU": ("EU", 47.0, 19.5),  # Hungary
    "ID": ("AS", -2.5, 118.0),  # Indonesia
    "IE": ("EU", 53.0, -8.0),  # Ireland
    "IL": ("AS", 31.5, 34.75),  # Israel
    "IM": ("EU", 54.23, -4.55),  # Isle of Man
    "IN": ("AS", 22.0, 79.0),  # India
    "IO": ("AS", -6.0, 71.5),  # British Indian Ocean Territory
    "IQ": ("AS", 33.0, 44.0),  # Iraq
    "IR": ("AS", 32.0, 53.0),  # Iran
    "IS": ("EU", 65.0, -18.0),  # Iceland
    "IT": ("EU", 42.83, 12.83),  # Italy
    "JE": ("EU", 49.21, -2.13),  # Jersey
    "JM": ("NA", 18.25, -77.5),  # Jamaica
    "JO": ("AS", 31.0, 36.0),  # Jordan
    "JP": ("AS", 36.0, 138.0),  # Japan
    "KE": ("AF", 0.5, 38.0),  # Kenya
    "KG": ("AS", 41.0, 75.0),  # Kyrgyzstan
    "KH": ("AS", 12.5, 105.0),  # Cambodia
    "KI": ("OC", 1.42, 173.0),  # Kiribati (Tarawa)
    "KM": ("AF", -12.17, 44.25),  # Comoros
    "KN": ("NA", 17.33, -62.75),  # Saint Kitts and Nevis
    "KP": ("AS", 40.0, 127.0),  # North Korea
    "KR": ("AS", 36.5, 127.8),  # South Korea
    "KW": ("AS", 29.5, 47.75),  # Kuwait
    "KY": ("NA", 19.5, -80.5),  # Cayman Islands
    "KZ": ("AS", 48.0, 68.0),  # Kazakhstan
    "LA": ("AS", 18.0, 105.0),  # Laos
    "LB": ("AS", 33.83, 35.83),  # Lebanon
    "LC": ("NA", 13.88, -60.97),  # Saint Lucia
    "LI": ("EU", 47.17, 9.53),  # Liechtenstein
    "LK": ("AS", 7.75, 80.75),  # Sri Lanka
    "LR": ("AF", 6.5, -9.5),  # Liberia
    "LS": ("AF", -29.5, 28.25),  # Lesotho
    "LT": ("EU", 55.5, 24.0),  # Lithuania
    "LU": ("EU", 49.75, 6.17),  # Luxembourg
    "LV": ("EU", 57.0, 25.0),  # Latvia
    "LY": ("AF", 27.0, 17.0),  # Libya
    "MA": ("AF", 32.0, -6.0),  # Morocco
    "MC": ("EU", 43.73, 7.42),  # Monaco
    "MD": ("EU", 47.0, 28.5),  # Moldova
    "ME": ("EU", 42.75, 19.25),  # Montenegro
    "MF": ("NA", 18.08, -63.05),  # Saint Martin (French part)
    "MG": ("AF", -20.0, 47.0),  # Madagascar
    "MH": ("OC", 9.0, 168.0),  # Marshall Islands
    "MK": ("EU", 41.6, 21.7),  # North Macedonia
    "ML": ("AF", 17.0, -4.0),  # Mali
    "MM": ("AS", 21.0, 96.0),  # Myanmar
    "MN": ("AS", 46.0, 105.0),  # Mongolia
    "MO": ("AS", 22.17, 113.55),  # Macao
    "MP": ("OC", 15.2, 145.75),  # Northern Mariana Islands
    "MQ": ("NA", 14.67, -61.0),  # Martinique
    "MR": ("AF", 20.0, -10.5),  # Mauritania
    "MS": ("NA", 16.75, -62.2),  # Montserrat
    "MT": ("EU", 35.9, 14.45),  # Malta
    "MU": ("AF", -20.28, 57.55),  # Mauritius
    "MV": ("AS", 3.25, 73.0),  # Maldives
    "MW": ("AF", -13.5, 34.0),  # Malawi
    "MX": ("NA", 23.0, -102.0),  # Mexico
    "MY": ("AS", 2.5, 112.5),  # Malaysia
    "MZ": ("AF", -18.25, 35.0),  # Mozambique
    "NA": ("AF", -22.0, 17.0),  # Namibia
    "NC": ("OC", -21.5, 165.5),  # New Caledonia
    "NE": ("AF", 16.0, 8.0),  # Niger
    "NF": ("OC", -29.03, 167.95),  # Norfolk Island
    "NG": ("AF", 9.0, 8.0),  # Nigeria
    "NI": ("NA", 13.0, -85.0),  # Nicaragua
    "NL": ("EU", 52.25, 5.5),  # Netherlands
    "NO": ("EU", 62.0, 10.0),  # Norway
    "NP": ("AS", 28.0, 84.0),  # Nepal
    "NR": ("OC", -0.53, 166.92),  # Nauru
    "NU": ("OC", -19.03, -169.87),  # Niue
    "NZ": ("OC", -41.0, 174.0),  # New Zealand
    "OM": ("AS", 21.0, 57.0),  # Oman
    "PA": ("NA", 9.0, -80.0),  # Panama
    "PE": ("SA", -10.0, -76.0),  # Peru
    "PF": ("OC", -17.0, -149.5),  # French Polynesia (Tahiti)
    "PG": ("OC", -6.0, 147.0),  # Papua New Guinea
    "PH": ("AS", 12.0, 122.0),  # Philippines
    "PK": ("AS", 30.0, 70.0),  # Pakistan
    "PL": ("EU", 52.0, 19.5),  # Poland
    "PM": ("NA", 46.83, -56.33),  # Saint Pierre and Miquelon
    "PN": ("OC", -25.07, -130.1),  # Pitcairn
    "PR": ("NA", 18.25, -66.5),  # Puerto Rico
    "PS": ("AS", 31.9, 35.2),  # Palestine
    "PT": ("EU", 39.5, -8.0),  # Portugal
    "PW": ("OC", 7.5, 134.5),  # Palau
    "PY": ("SA", -23.0, -58.0),  # Paraguay
    "QA": ("AS", 25.3, 51.2),  # Qatar
    "RE": ("AF", -21.1, 55.6),  # Réunion
    "RO": ("EU", 46.0, 25.0),  # Romania
    "RS": ("EU", 44.0, 21.0),  # Serbia
    "RU": ("EU", 60.0, 100.0),  # Russia (geographic centre; continent EU by convention)
    "RW": ("AF", -2.0, 30.0),  # Rwanda
    "SA": ("AS", 24.0, 45.0),  # Saudi Arabia
    "SB": ("OC", -8.0, 159.0),  # Solomon Islands
    "SC": ("AF", -4.58, 55.67),  # Seychelles
    "SD": ("AF", 15.0, 30.0),  # Sudan
    "SE": ("EU", 62.0, 15.0),  # Sweden
    "SG": ("AS", 1.35, 103.82),  # Singapore
    "SH": ("AF", -15.93, -5.7),  # Saint Helena, Ascension and Tristan da Cunha
    "SI": ("EU", 46.12, 14.82),  # Slovenia
    "SJ": ("EU", 78.0, 20.0),  # Svalbard and Jan Mayen
    "SK": ("EU", 48.67, 19.5),  # Slovakia
    "SL": ("AF", 8.5, -11.75),  # Sierra Leone
    "SM": ("EU", 43.93, 12.45),  # San Marino
    "SN": ("AF", 14.5, -14.5),  # Senegal
    "SO": ("AF", 6.0, 47.0),  # Somalia
    "SR": ("SA", 4.0, -56.0),  # Suriname
    "SS": ("AF", 7.5, 30.0),  # South Sudan
    "ST": ("AF", 0.25, 6.6),  # Sao Tome and Principe
    "SV": ("NA", 13.83, -88.92),  # El Salvador
    "SX": ("NA", 18.03, -63.05),  # Sint Maarten (Dutch part)
    "SY": ("AS", 35.0, 38.5),  # Syria
    "SZ": ("AF", -26.5, 31.5),  # Eswatini
    "TC": ("NA", 21.75, -71.58),  # Turks and Caicos Islands
    "TD": ("AF", 15.0, 19.0),  # Chad
    "TF": ("AN", -49.25, 69.17),  # French Southern Territories
    "TG": ("AF", 8.5, 1.0),  # Togo
    "TH": ("AS", 15.0, 101.0),  # Thailand
    "TJ": ("AS", 39.0, 71.0),  # Tajikistan
    "TK": ("OC", -9.0, -172.0),  # Tokelau
    "TL": ("AS", -8.83, 125.92),  # Timor-Leste
    "TM": ("AS", 40.0, 60.0),  # Turkmenistan
    "TN": ("AF", 34.0, 9.0),  # Tunisia
    "TO": ("OC", -20.0, -175.0),  # Tonga
    "TR": ("AS", 39.0, 35.0),  # Turkey
    "TT": ("NA", 10.5, -61.25),  # Trinidad and Tobago
    "TV": ("OC", -8.0, 178.0),  # Tuvalu
    "TW": ("AS", 23.7, 121.0),  # Taiwan
    "TZ": ("AF", -6.0, 35.0),  # Tanzania
    "UA": ("EU", 49.0, 32.0),  # Ukraine
    "UG": ("AF", 1.25, 32.5),  # Uganda
    "UM": ("OC", 19.28, 166.6),  # United States Minor Outlying Islands (Wake)
    "US": ("NA", 39.8, -98.6),  # United States (contiguous centre)
    "UY": ("SA", -33.0, -56.0),  # Uruguay
    "UZ": ("AS", 41.0, 64.0),  # Uzbekistan
    "VA": ("EU", 41.9, 12.45),  # Holy See
    "VC": ("NA", 13.25, -61.2),  # Saint Vincent and the Grenadines
    "VE": ("SA", 7.0, -66.0),  # Venezuela
    "VG": ("NA", 18.5, -64.5),  # Virgin Islands (British)
    "VI": ("NA", 18.35, -64.93),  # Virgin Islands (U.S.)
    "VN": ("AS", 16.17, 107.83),  # Viet Nam
    "VU": ("OC", -16.0, 167.0),  # Vanuatu
    "WF": ("OC", -13.3, -176.2),  # Wallis and Futuna
    "WS": ("OC", -13.58, -172.33),  # Samoa
    "XK": ("EU", 42.6, 20.9),  # Kosovo (user-assigned code used by GeoIP databases)
    "YE": ("AS", 15.5, 47.5),  # Yemen
    "YT": ("AF", -12.83, 45.17),  # Mayotte
    "ZA": ("AF", -29.0, 24.0),  # South Africa
    "ZM": ("AF", -14.0, 27.5),  # Zambia
    "ZW": ("AF", -19.0, 29.75),  # Zimbabwe
}


def is_country(cc: str) -> bool:
    return cc.upper() in COUNTRIES


def continent_of(cc: str) -> str | None:
    entry = COUNTRIES.get(cc.upper())
    return entry[0] if entry else None


def centroid(cc: str) -> tuple[float, float] | None:
    entry = COUNTRIES.get(cc.upper())
    return (entry[1], entry[2]) if entry else None
