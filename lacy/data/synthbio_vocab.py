"""Field vocabularies of the synthetic biography world (``lacy.data.synthbio``), written for lacy.

Names, majors, town-name parts and industry words are hand-written lists; towns, universities and
employers are built combinatorially from them, so every value looks like plausible English and the
lists stay short to read. Everything here is a fixed, ordered tuple: the world generator draws from
these with a seeded RNG, so the order matters for determinism and must never come from a set.

Ambiguity rules that ``World.extract_claims`` relies on (checked by the tests):

* no town, university, major or employer equals a first name or a surname, so a person's name never
  reads as an attribute value;
* a university or employer may *contain* a town or a surname ("University of Ashford",
  "Hartley Logistics"); extraction takes the longest match, so the containing value wins;
* no value contains a period, so a period always ends a sentence.
"""

from __future__ import annotations

import calendar

FEMALE_FIRST_NAMES: tuple[str, ...] = tuple("""
Abigail Ada Adele Adrienne Agatha Agnes Aileen Alana Alice Alison Amanda Amelia Amy Andrea Angela
Anita Ann Anna Annabel Annette Antonia Ariana Audrey Aurora Ava Barbara Beatrice Belinda Bella
Bernadette Beth Bethany Beverly Bianca Brenda Bridget Camilla Candice Carla Carmen Carol Caroline
Cassandra Catherine Cecilia Celeste Charlotte Chloe Christina Claire Clara Claudia Colette Cora
Cynthia Daisy Daphne Deborah Delia Denise Diana Dolores Donna Dora Doris Dorothy Edith Edna Eileen
Elaine Eleanor Elena Eliza Elizabeth Ella Eloise Elsie Emily Emma Erica Esther Eva Evelyn Faith
Felicity Fiona Flora Florence Frances Freya Gabriella Gemma Georgia Georgina Geraldine Gillian Gina
Gloria Grace Gwen Hannah Harriet Heather Helen Helena Henrietta Hilda Holly Imogen Ingrid Irene Iris
Isabel Isla Ivy Jacqueline Jane Janet Jasmine Jean Jemima Jennifer Jessica Joan Joanna Jocelyn
Josephine Joyce Judith Julia Juliet Karen Kate Katherine Kathleen Kayla Keira Kimberly Laura Lauren
Leah Leila Lillian Lily Linda Lisa Lois Lorna Louisa Louise Lucia Lucy Lydia Mabel Madeline Maggie
Marcia Margaret Maria Marian Marina Marjorie Martha Mary Matilda Maureen Maxine Megan Melanie Melissa
Mildred Miranda Miriam Molly Monica Muriel Nadia Nancy Naomi Natalie Nell Nicola Nina Nora Olive
Olivia Pamela Patricia Paula Pauline Pearl Penelope Phoebe Phyllis Polly Priscilla Rachel Rebecca
Regina Rita Roberta Rosa Rosalind Rosemary Ruby Ruth Sabrina Sally Samantha Sandra Sarah Selena
Sharon Sheila Shirley Sophia Sophie Stella Susan Sybil Sylvia Tabitha Tamsin Tessa Thea Theresa
Tilly Tracy Ursula Valerie Vanessa Vera Veronica Victoria Violet Virginia Vivian Wendy Willa
Winifred Yvonne Zara Zoe Alexandra Alma Althea Amber Anne Arabella Astrid Beryl Blanche Carys
Clementine Constance Cordelia Dinah Eliana Esme Estelle Ethel Fay Gertrude Greta Hattie Hester
Honor Ida Jessie Kitty Lara Letitia Lottie Mae Maisie Marguerite Minnie Myra Nettie Odette Opal
Peggy Petra Rhoda Rosie Serena Tallulah Una Verity Wilhelmina Yolanda
""".split())

MALE_FIRST_NAMES: tuple[str, ...] = tuple("""
Aaron Abraham Adam Adrian Alan Albert Alexander Alfred Alistair Allen Ambrose Andrew Angus Anthony
Archibald Arnold Arthur Barnaby Barry Basil Benedict Benjamin Bernard Bertram Bradley Brandon Brian
Bruce Bryan Byron Calvin Cameron Carl Casper Cecil Cedric Charles Christian Christopher Clarence
Clement Clifford Clive Colin Conrad Cornelius Craig Cyril Damian Daniel Darren David Declan Dennis
Derek Desmond Dominic Donald Douglas Duncan Dylan Edgar Edmund Edward Edwin Elliot Emmett Eric
Ernest Eugene Evan Felix Ferdinand Finn Frank Frederick Gabriel Gareth Gavin Geoffrey George Gerald
Glen Graham Guy Harold Harry Hector Henry Herbert Horace Hugh Hugo Ian Isaac Ivan Jack Jacob Jasper
Jeffrey Jeremy Jerome Joel John Jonathan Joseph Joshua Julian Justin Keith Kenneth Kevin Leo Leonard
Lionel Louis Luke Malcolm Marcus Mark Matthew Maurice Max Michael Nathan Neil Nicholas Nigel Noah
Norman Oliver Oscar Patrick Paul Percy Peter Philip Quentin Ralph Raymond Reginald Rex Richard Robert
Roderick Rodney Roger Roland Ronald Rory Ross Rowan Rufus Rupert Samuel Sebastian Simon Solomon
Stephen Stuart Terence Theodore Thomas Timothy Tobias Toby Travis Trevor Tristan Victor Walter
Wesley Wilfred William Winston Xavier Zachary Alec Alvin Angelo Aubrey Boris Brendan Caleb Chester
Dexter Dudley Elias Emil Ezra Floyd Forrest Hamish Hank Ira Irving Jared Jerry Jesse Kirk Lance Lyle
Marvin Maxwell Mervyn Milo Monty Ned Neville Nolan Orson Otis Otto Quincy Rhys Roman Roy Seth Silas
Sydney Terry Tyler Vernon Wayne Wyatt Abel Ansel Anton Archer Barney Benson Bertie Cary Cosmo Dorian
Edison Elmer Enoch Ewan Fabian Fergus Gideon Godfrey Gus Harlan Horatio Humphrey Jonah Kit Lazarus
Leopold Lucian Magnus Merlin Mortimer Nico Oswald Piers Ralphie Reuben Ronan Septimus Stanford
Sylvester Thaddeus Ulysses Virgil Ward
""".split())

SURNAMES: tuple[str, ...] = tuple("""
Abbott Acton Adams Ainsworth Aldridge Allard Ambler Appleby Armitage Arnott Atkins Atkinson Bagley
Bailey Baker Baldwin Ball Banks Barker Barlow Barnes Barrett Bartlett Barton Bates Baxter Beckett
Bell Bennett Bentley Berry Bishop Blackwell Bolton Booth Bowen Bowman Boyd Bradshaw Brennan Brewer
Briggs Brooks Brown Buckley Bullock Burgess Burke Burns Burton Butler Byrne Caldwell Campbell Cannon
Carpenter Carr Carroll Carter Cartwright Chambers Chandler Chapman Clarke Clayton Clements Coates
Cole Coleman Collins Compton Conway Cook Cooper Corbett Cox Crawford Crosby Cross Cunningham Curtis
Dalton Daniels Davies Dawson Day Dean Denton Dickinson Dixon Dobson Doyle Drake Duffy Dunn Dyer
Eastwood Edwards Elliott Ellis Emerson Evans Everett Farmer Farrell Faulkner Fenton Ferguson
Fielding Finch Fisher Fitzgerald Fleming Fletcher Flynn Ford Forster Foster Fowler Fox Francis
Franklin Freeman Fuller Gardner Garrett Gibbs Gibson Gilbert Giles Glover Goddard Goodwin Gordon
Gough Graves Gray Greenwood Gregory Griffin Griffiths Hale Hall Hamilton Hammond Hancock Hardy Harper
Harris Harrison Hart Hartley Harvey Hawkins Hayes Heath Henderson Hewitt Hicks Higgins Hill Hobbs
Hodges Hodgson Holden Holland Holloway Holmes Hopkins Horton Howard Howe Hughes Hunt Hunter
Hutchinson Ingram Irwin Jackson James Jarvis Jenkins Jennings Johnson Jones Jordan Kay Kelly Kemp
Kendall Kennedy Kent Kerr King Kirby Knight Knowles Lamb Lambert Lane Lawrence Lawson Leach Lee
Lewis Lindsay Little Lloyd Long Lowe Lucas Lynch Mann Marsh Marshall Martin Mason Matthews Mead
Mellor Miles Miller Mills Mitchell Moore Morgan Morris Morrison Moss Murphy Murray Nash Newman
Newton Nicholls Noble Norris Norton Osborne Owen Page Palmer Parker Parry Parsons Patel Payne Pearce
Pearson Perkins Perry Phillips Pickering Pierce Pike Pollard Poole Porter Potter Powell Pratt
Preston Price Pritchard Quinn Randall Read Reed Rees Reeves Reid Reynolds Rhodes Richards Richardson
Riley Roberts Robinson Rogers Rowe Russell Rutherford Ryan Sanders Saunders Savage Sawyer Scott
Sharp Shaw Shepherd Simmons Simpson Sinclair Slater Smith Snow Spencer Stanley Steele Stephens
Stevenson Sutton Swift Talbot Tanner Taylor Thompson Thornton Todd Townsend Tucker Turner Underwood
Vaughan Vincent Wade Walker Wall Walsh Walton Warner Waters Watkins Watson Watts Weaver Webb Webster
Wells Wheeler Whitaker Whitehead Wilkinson Williams Willis Wilson Winter Woods Wright Yates Young
Ackroyd Alcott Ashdown Atherley Aylward Bancroft Barnard Beauchamp Birkett Blakemore Blythe Bonner
Brabham Bramley Brightwell Brockway Calloway Catterall Chadwick Chilton Cleaver Colby Cotterill
Crabtree Cresswell Croft Dainty Darby Dearden Dinsdale Dodd Drayton Eccleston Elwood Entwistle
Fairbairn Fawcett Fenwick Fothergill Garside Gaskell Gilchrist Goodall Greaves Hadley Halliwell
Harding Hargreaves Hatfield Haworth Hebden Holroyd Horsfall Hurst Illingworth Kershaw Kingsley
Lacey Lightfoot Loxley Maddox Marlow Merriman Midgley Moorcroft Naylor Nuttall Ogden Ormerod
Padgett Pemberton Pilkington Prescott Radcliffe Rawlings Redfern Ridley Rothwell Sedgwick Shackleton
Sowerby Stainton Stott Sugden Sykes Tattersall Thackeray Tolley Trelawney Tremayne Varley Wainwright
Wardle Whitworth Wilde Wolstenholme Worsley Wragg
""".split())

# Real undergraduate majors; Title Case so a generated value is easy to delimit.
MAJORS: tuple[str, ...] = tuple(
    line.strip()
    for line in """
Accounting
Actuarial Science
Aerospace Engineering
African Studies
Agricultural Science
Agronomy
Anthropology
Applied Mathematics
Arabic
Archaeology
Architecture
Art History
Astronomy
Astrophysics
Biochemistry
Bioengineering
Biology
Biomedical Engineering
Biostatistics
Botany
Business Administration
Cartography
Chemical Engineering
Chemistry
Chinese
Civil Engineering
Classics
Cognitive Science
Communications
Comparative Literature
Computer Engineering
Computer Science
Conservation Biology
Creative Writing
Criminology
Dance
Data Science
Dentistry
Drama
Dutch
Earth Science
Ecology
Economic History
Economics
Education
Electrical Engineering
English Literature
Entomology
Environmental Science
Epidemiology
Ethnomusicology
Film Studies
Finance
Fine Art
Forestry
French
Genetics
Geography
Geology
Geophysics
German
Graphic Design
Greek
Health Sciences
Hebrew
History
Hospitality Management
Immunology
Industrial Design
Information Systems
International Relations
Italian
Japanese
Journalism
Kinesiology
Korean
Landscape Architecture
Latin
Law
Library Science
Linguistics
Management
Marine Biology
Marketing
Materials Science
Mathematics
Mechanical Engineering
Media Studies
Medicine
Meteorology
Microbiology
Mining Engineering
Music
Music Theory
Naval Architecture
Neuroscience
Nuclear Engineering
Nursing
Nutrition
Oceanography
Optometry
Paleontology
Petroleum Engineering
Pharmacology
Pharmacy
Philosophy
Photography
Physical Therapy
Physics
Physiology
Political Science
Portuguese
Psychology
Public Health
Public Policy
Religious Studies
Russian
Sanskrit
Social Work
Sociology
Software Engineering
Spanish
Sports Science
Statistics
Structural Engineering
Theatre
Theology
Toxicology
Urban Planning
Veterinary Science
Virology
Viticulture
Welsh
Zoology
""".strip().splitlines()
)

TOWN_PREFIXES: tuple[str, ...] = tuple("""
Ash Birch Black Bram Bright Brook Burn Cal Clay Cold Cran Crow Dun East Elm Fair Fern Glen Gold
Green Hazel Kings Lang Marl Mill North Oak Pen Red Rose Rush Silver South Stone Thorn Wal West
White Wil Win Wolf Yar
""".split())

TOWN_SUFFIXES: tuple[str, ...] = tuple("""
ford haven bury ton field wick ham by stead wood combe mouth bridge dale port well ley worth gate
minster moor hurst thorpe mere borough chester cliffe
""".split())

INDUSTRY_WORDS: tuple[str, ...] = tuple("""
Logistics Analytics Biotech Foods Motors Systems Robotics Media Partners Capital Energy Textiles
Pharmaceuticals Software Consulting Insurance Holdings Labs Aerospace Shipping Publishing Brewing
Construction Electronics Instruments Materials Optics Networks Solutions Studios Technologies
Ventures Bank Chemicals Dynamics Airlines Hotels Mining Telecom Group Industries Manufacturing
Properties Security Press Bakeries Furniture Outfitters Engineering Foundry
""".split())

MONTHS: tuple[str, ...] = tuple(calendar.month_name[1:])
BIRTH_YEARS: tuple[int, int] = (1940, 1999)  # inclusive range of birth years


def _towns() -> tuple[str, ...]:
    """Prefix x suffix compounds ("Ash" + "ford"), skipping doubled letters and real names."""
    names = set(FEMALE_FIRST_NAMES) | set(MALE_FIRST_NAMES) | set(SURNAMES)
    towns = []
    for prefix in TOWN_PREFIXES:
        for suffix in TOWN_SUFFIXES:
            town = prefix + suffix
            if prefix[-1] != suffix[0] and town not in names:
                towns.append(town)
    return tuple(towns)


TOWNS: tuple[str, ...] = _towns()


# The first three take a town, the last a surname.
UNIVERSITY_FORMS: tuple[str, ...] = (
    "University of {}",
    "{} Institute of Technology",
    "{} State University",
    "{} College",
)


def _universities() -> tuple[str, ...]:
    """Three town-based patterns over disjoint strides of the towns, plus "{Surname} College"."""
    by_town = UNIVERSITY_FORMS[:3]
    universities = [pattern.format(town) for i, pattern in enumerate(by_town) for town in TOWNS[i :: 2 * len(by_town)]]
    universities += [UNIVERSITY_FORMS[3].format(surname) for surname in SURNAMES[::2]]
    return tuple(universities)


UNIVERSITIES: tuple[str, ...] = _universities()


def _employers() -> tuple[str, ...]:
    """ "{Surname} {Industry}" for every surname, with two industries each chosen by a fixed stride."""
    n = len(INDUSTRY_WORDS)
    employers = []
    for i, surname in enumerate(SURNAMES):
        for stride in (7, 19):
            employers.append(f"{surname} {INDUSTRY_WORDS[(i * stride) % n]}")
    return tuple(dict.fromkeys(employers))


EMPLOYERS: tuple[str, ...] = _employers()

